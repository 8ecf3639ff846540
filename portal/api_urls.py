"""Routes under /api/v1/ owned by this app."""

from django.urls import path

from . import api

urlpatterns = [
    path("keys", api.KeyListCreate.as_view(), name="api-keys"),
    path("keys/<int:key_id>", api.KeyDetail.as_view(), name="api-key-detail"),
    path("usage", api.UsageView.as_view(), name="api-usage"),
]
