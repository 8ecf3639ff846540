from django.contrib import admin

from .models import Prediction


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["id", "user", "version", "source", "status", "created_at", "compute_ms", "attempts"]
    list_filter = ["status", "source"]
    search_fields = ["id", "user__username", "version__model__name"]
    list_select_related = ["user", "version__model__owner"]
    raw_id_fields = ["user", "api_key", "version"]
    date_hierarchy = "created_at"
    readonly_fields = [f.name for f in Prediction._meta.fields]
