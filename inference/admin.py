from django.contrib import admin

from .models import Prediction, WebhookDelivery


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    """The prediction ledger: read-only (rows are written by the service, never by hand)."""

    list_display = [
        "id",
        "user",
        "version",
        "source",
        "status",
        "created_at",
        "queue_ms",
        "compute_ms",
        "bytes_in",
        "bytes_out",
        "attempts",
        "charged",
    ]
    list_filter = ["status", "source", "charged", "created_at"]
    search_fields = ["id", "user__username", "version__model__name"]
    list_select_related = ["user", "version__model__owner"]
    raw_id_fields = ["user", "api_key", "version"]
    date_hierarchy = "created_at"
    exclude = ["inputs"]  # may be large, and they are the user's data

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Every attempt to deliver a webhook, as the Celery task recorded it: read-only."""

    list_display = ["created_at", "user", "prediction", "event", "attempt", "status_code", "url"]
    list_filter = ["event", "status_code", "created_at"]
    search_fields = ["prediction__id", "user__username", "url", "message_id"]
    list_select_related = ["user"]
    raw_id_fields = ["user", "prediction"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
