"""The prediction record as the API shows it: `GET /api/v1/predictions/<id>`, and the body of its webhooks."""

from __future__ import annotations

import json

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from marketplace import files

from ..models import Prediction


class TensorSerializer(serializers.Serializer):
    name = serializers.CharField()
    datatype = serializers.CharField()
    shape = serializers.ListField(child=serializers.IntegerField())
    data = serializers.ListField(child=serializers.JSONField())


class PredictionSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    model = serializers.CharField(source="version.model.slug", read_only=True)
    version = serializers.IntegerField(source="version.number", read_only=True)
    outputs = serializers.SerializerMethodField()
    latency_ms = serializers.SerializerMethodField()

    class Meta:
        model = Prediction
        fields = [
            "id",
            "url",
            "model",
            "version",
            "source",
            "status",
            "outputs",
            "error",
            "attempts",
            "created_at",
            "started_at",
            "finished_at",
            "latency_ms",
            "queue_ms",
            "compute_ms",
            "bytes_in",
            "bytes_out",
            "webhook",
            "webhook_events_filter",
        ]

    def get_url(self, prediction) -> str:
        path = reverse("prediction-detail", kwargs={"id": prediction.id})
        request = self.context.get("request")
        # Webhook bodies are built in the worker, which knows no host name: the path then.
        return request.build_absolute_uri(path) if request is not None else path

    @extend_schema_field(TensorSerializer(many=True, allow_null=True))
    def get_outputs(self, prediction):
        if prediction.outputs is None and prediction.outputs_file:
            return json.loads(files.read_bytes(prediction.outputs_file.name))
        return prediction.outputs

    def get_latency_ms(self, prediction) -> float | None:
        if prediction.finished_at is None:
            return None
        return round((prediction.finished_at - prediction.created_at).total_seconds() * 1000, 3)
