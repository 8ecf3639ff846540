"""Predictions: the record of every run of a model, interactive or queued. It is also the usage ledger."""

from __future__ import annotations

import math
import uuid

from django.conf import settings
from django.db import models

NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _non_finite_as_text(value: float):
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


class TensorListField(models.JSONField):
    """A list of tensors ({"name", "datatype", "shape", "data"}) kept in a JSON column.

    PostgreSQL's json types refuse NaN and ±Infinity, which models do output: in floating-point tensors they
    are stored as the strings "NaN", "Infinity" and "-Infinity" and read back as floats.
    """

    def get_prep_value(self, value):
        if isinstance(value, list):
            value = [self._map_floats(tensor, _non_finite_as_text) for tensor in value]
        return super().get_prep_value(value)

    def from_db_value(self, value, expression, connection):
        value = super().from_db_value(value, expression, connection)
        if isinstance(value, list):
            value = [self._map_floats(tensor, lambda v: NON_FINITE_TEXT.get(v, v)) for tensor in value]
        return value

    @staticmethod
    def _map_floats(tensor, convert):
        if (
            not isinstance(tensor, dict)
            or not str(tensor.get("datatype", "")).startswith("FP")
            or not isinstance(tensor.get("data"), list)
        ):
            return tensor
        data = tensor["data"]
        if not any(isinstance(v, str) or (isinstance(v, float) and not math.isfinite(v)) for v in data):
            return tensor
        return {**tensor, "data": [convert(v) if isinstance(v, float | str) else v for v in data]}


class Prediction(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELED = "canceled"

    class Source(models.TextChoices):
        API = "api"
        V2 = "v2"
        WEB = "web"
        GRPC = "grpc"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="predictions")
    api_key = models.ForeignKey(
        "portal.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="predictions"
    )
    version = models.ForeignKey(
        "marketplace.ModelVersion", on_delete=models.CASCADE, related_name="predictions"
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.API)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED, db_index=True)
    # Inputs of queued jobs, as the worker will decode them; interactive calls never store inputs.
    inputs = models.JSONField(null=True, blank=True)
    outputs = TensorListField(null=True, blank=True)
    outputs_file = models.FileField(upload_to="predictions/", blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    queue_ms = models.FloatField(null=True, blank=True)
    compute_ms = models.FloatField(null=True, blank=True)
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    # Generative models' usage, as their OpenAI-compatible answer reports it (a stream cut short included).
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    charged = models.BooleanField(default=False, help_text="Compute time was charged to the user's quota.")
    # Where to POST the record as it starts and ends (`inference.webhooks`), and for which events; blank
    # for nearly every prediction, which then costs the ledger nothing more.
    webhook = models.URLField(max_length=2000, blank=True)
    webhook_events_filter = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["user", "-created_at"]),
            models.Index(fields=["status", "started_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.status})"


class WebhookSecret(models.Model):
    """A user's webhook signing secret (`whsec_` and base64 bytes): shared with the user's receivers, so it is
    kept as it is, not hashed, and shown to its owner (`GET /api/v1/webhooks/secret`)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True)
    key = models.CharField(max_length=100)
    created_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"webhook secret of {self.user}"


class WebhookDelivery(models.Model):
    """One attempt to deliver one event of a prediction: what its owner sees of their webhooks."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    prediction = models.ForeignKey(Prediction, on_delete=models.CASCADE, related_name="webhook_deliveries")
    event = models.CharField(max_length=16)
    # The `webhook-id` header: the same for every attempt at one event, so receivers can drop repeats.
    message_id = models.CharField(max_length=64)
    url = models.URLField(max_length=2000)
    attempt = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.event} of {self.prediction_id} #{self.attempt}: {self.status_code or self.error[:40]}"
