"""Routes under /api/v1/ owned by this app."""

from django.urls import path

from . import rest as api
from . import webhooks_api

urlpatterns = [
    path("models/<str:owner>/<str:name>/predict", api.PredictView.as_view(), name="model-predict"),
    path("predictions", api.PredictionListView.as_view(), name="prediction-list"),
    path("predictions/<uuid:id>", api.PredictionDetailView.as_view(), name="prediction-detail"),
    path("predictions/<uuid:id>/cancel", api.PredictionCancelView.as_view(), name="prediction-cancel"),
    path("webhooks/secret", webhooks_api.WebhookSecretView.as_view(), name="webhook-secret"),
    path("webhooks/deliveries", webhooks_api.WebhookDeliveryListView.as_view(), name="webhook-deliveries"),
]
