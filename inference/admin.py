from django.contrib import admin

from .models import Prediction, WebhookDelivery

# The admin's words for the model (Django would write "Webhook deliverys").
WebhookDelivery._meta.verbose_name_plural = "webhook deliveries"


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
        "queue_time",
        "compute_time",
        "prompt_tokens",
        "completion_tokens",
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

    @admin.display(description="queue (ms)", ordering="queue_ms")
    def queue_time(self, prediction: Prediction) -> str:
        return rounded_ms(prediction.queue_ms)

    @admin.display(description="compute (ms)", ordering="compute_ms")
    def compute_time(self, prediction: Prediction) -> str:
        return rounded_ms(prediction.compute_ms)


def rounded_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


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
