from django.contrib import admin

from .models import Model, ModelVersion


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    extra = 0
    can_delete = False
    fields = ["number", "format", "status", "size", "sha256", "reason", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # versions come from validated uploads only


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    list_display = ["name", "owner", "task", "latest_format", "visibility", "downloads", "runs", "updated_at"]
    list_filter = ["visibility", "task", "latest_format"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["latest_format", "downloads", "runs", "created_at", "updated_at"]
    exclude = ["search_document"]
    inlines = [ModelVersionInline]


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "format", "status", "size", "created_at"]
    list_filter = ["status", "format"]
    search_fields = ["model__name", "model__owner__username", "sha256"]
    list_select_related = ["model__owner"]
    readonly_fields = [
        "model",
        "number",
        "file",
        "format",
        "size",
        "sha256",
        "status",
        "reason",
        "signature",
        "created_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False
