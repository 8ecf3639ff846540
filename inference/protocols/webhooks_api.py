"""`/api/v1/webhooks/…`: the caller's signing secret, and the recent attempts to deliver their webhooks."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.authentication import HasScope

from .. import webhooks
from ..models import WebhookDelivery, WebhookSecret

RECENT_DELIVERIES = 100


class WebhookSecretSerializer(serializers.ModelSerializer):
    key = serializers.CharField(help_text="whsec_ and base64 bytes: verify each webhook's signature with it.")

    class Meta:
        model = WebhookSecret
        fields = ["key", "created_at"]


class WebhookDeliverySerializer(serializers.ModelSerializer):
    prediction = serializers.UUIDField(source="prediction_id")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "prediction",
            "event",
            "message_id",
            "url",
            "attempt",
            "status_code",
            "error",
            "duration_ms",
            "created_at",
        ]


class WebhookSecretView(APIView):
    """Webhooks are part of predicting: a key with the `predict` scope reads and rotates the secret."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scope = "predict"

    @extend_schema(
        operation_id="webhooks_secret_retrieve",
        summary="Your webhook signing secret",
        responses=WebhookSecretSerializer,
    )
    def get(self, request):
        return Response(WebhookSecretSerializer(webhooks.secret_get(request.user)).data)

    @extend_schema(
        operation_id="webhooks_secret_rotate",
        summary="Rotate your webhook signing secret",
        description="Deliveries from now on, retries of earlier ones too, are signed with the new secret.",
        request=None,
        responses=WebhookSecretSerializer,
    )
    def post(self, request):
        return Response(WebhookSecretSerializer(webhooks.secret_rotate(request.user)).data)


class WebhookDeliveryListView(APIView):
    permission_classes = [IsAuthenticated, HasScope]
    required_scope = "read"

    @extend_schema(
        operation_id="webhooks_deliveries_list",
        summary="Your latest webhook delivery attempts, newest first",
        parameters=[OpenApiParameter("prediction", str, description="Only this prediction's (its id).")],
        responses=WebhookDeliverySerializer(many=True),
    )
    def get(self, request):
        deliveries = WebhookDelivery.objects.filter(user=request.user)
        prediction = request.query_params.get("prediction")
        if prediction:
            try:
                deliveries = deliveries.filter(
                    prediction_id=serializers.UUIDField().to_internal_value(prediction)
                )
            except serializers.ValidationError:
                raise ValidationError({"prediction": ["Must be a prediction id."]}) from None
        return Response(WebhookDeliverySerializer(deliveries[:RECENT_DELIVERIES], many=True).data)
