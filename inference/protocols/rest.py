"""/api/v1/: run a model, and the caller's predictions."""

from __future__ import annotations

import django_filters
from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from portal.logs import request_note

from .. import ledger, webhooks
from ..codec import DATATYPES, TensorError, decode_image, decode_named_lists, decode_oip_tensors
from ..models import Prediction
from ..scheduling.queue import ModelBusy, Unavailable
from ..services import (
    GateClosed,
    VersionNotFound,
    VersionValidating,
    outcome_outputs_json,
    outcome_top,
    prediction_submit,
    prediction_wait,
    target_find,
)
from ..text import TextError, outcome_arrays, text_request, text_results
from .outcomes import Ending, ending_of, message_of, retry_headers
from .serializers import PredictionSerializer, TensorSerializer

# --- serializers --------------------------------------------------------------------------------------------


class TopSerializer(serializers.Serializer):
    label = serializers.CharField()
    score = serializers.FloatField()


OIP_DATATYPES = list(DATATYPES)
NESTED_LIST = {
    "type": "array",
    "description": "A nested list of the input's shape: numbers, true/false (BOOL) or strings (BYTES).",
    "items": {},
}
VERSION_FIELD = {"type": "integer", "minimum": 1, "description": "Default: the latest ready version."}
# Every body form may name a webhook (inference.webhooks).
WEBHOOK_FIELDS = {
    "webhook": {
        "type": "string",
        "format": "uri",
        "pattern": "^https://",
        "description": "POST the prediction's record here as it starts and ends, signed per Standard "
        "Webhooks with your secret (/api/v1/webhooks/secret). Must reach a public address.",
    },
    "webhook_events_filter": {
        "type": "array",
        "minItems": 1,
        "items": {"type": "string", "enum": ["start", "output", "completed"]},
        "description": "Which events to send (default: all).",
    },
}
# The body is a union: a schema generated from one serializer could not say that exactly one form is sent.
PREDICT_BODY_SCHEMA = {
    "oneOf": [
        {
            "title": "Named inputs",
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "inputs": {
                    "type": "object",
                    "minProperties": 1,
                    "description": "Input name -> nested list; datatypes come from the model's signature.",
                    "additionalProperties": NESTED_LIST,
                },
                "version": VERSION_FIELD,
                **WEBHOOK_FIELDS,
            },
        },
        {
            "title": "Open Inference Protocol tensors",
            "type": "object",
            "required": ["inputs"],
            "additionalProperties": False,
            "properties": {
                "inputs": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "datatype", "shape", "data"],
                        "properties": {
                            "name": {"type": "string"},
                            "datatype": {"type": "string", "enum": OIP_DATATYPES},
                            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                            "data": {"type": "array", "description": "Flat, row-major.", "items": {}},
                        },
                    },
                },
                "version": VERSION_FIELD,
                **WEBHOOK_FIELDS,
            },
        },
        {
            "title": "Text",
            "type": "object",
            "required": ["text"],
            "additionalProperties": False,
            "properties": {
                "text": {
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "minItems": 1, "items": {"type": "string"}},
                    ],
                    "description": "Text models with a tokenizer: one text or a list; the server tokenizes.",
                },
                "version": VERSION_FIELD,
                **WEBHOOK_FIELDS,
            },
        },
        {
            "title": "Image",
            "type": "object",
            "required": ["image"],
            "additionalProperties": False,
            "properties": {
                "image": {
                    "type": "string",
                    "description": "Image-classification models: a base64 PNG or JPEG; the model's "
                    "preprocessing turns it into its input.",
                },
                "version": VERSION_FIELD,
                **WEBHOOK_FIELDS,
            },
        },
    ],
}
ERROR_SCHEMA = {
    "type": "object",
    "description": 'DRF\'s {"detail": …}, or field errors such as {"inputs": ["…"]}.',
    "additionalProperties": True,
}


TOP_SCHEMA = {
    "type": "array",
    "description": "Classification models: the best labels; for a list of texts, one such list per text.",
    "items": {
        "oneOf": [
            {
                "type": "object",
                "required": ["label", "score"],
                "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
            },
            {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["label", "score"],
                    "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
                },
            },
        ]
    },
}


@extend_schema_field(TOP_SCHEMA)
class TopField(serializers.JSONField):
    pass


@extend_schema_field(
    {
        "type": "array",
        "description": "Feature-extraction models given text: one L2-normalized vector per text.",
        "items": {"type": "array", "items": {"type": "number"}},
    }
)
class EmbeddingsField(serializers.JSONField):
    pass


class PredictResultSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    model = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    outputs = TensorSerializer(many=True, required=False)
    top = TopField(required=False)
    embeddings = EmbeddingsField(required=False)
    error = serializers.CharField(required=False)
    latency_ms = serializers.FloatField()


class PredictAcceptedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField()
    url = serializers.URLField()


# --- views --------------------------------------------------------------------------------------------------


def unavailable(message: str) -> Response:
    return Response(
        {"detail": message},
        status=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers=retry_headers(Ending.UNAVAILABLE),
    )


def wait_seconds(request) -> float:
    raw = request.query_params.get("wait")
    if raw in (None, ""):
        return float(settings.PREDICTION_WAIT_DEFAULT)
    try:
        value = float(raw)
    except ValueError:
        raise ValidationError({"wait": "Must be a number of seconds."}) from None
    if not 0 <= value <= settings.PREDICTION_WAIT_MAX:
        raise ValidationError({"wait": f"Must be between 0 and {settings.PREDICTION_WAIT_MAX} seconds."})
    return value


def wants_async(request) -> bool:
    return "respond-async" in request.headers.get("Prefer", "").lower()


def predict_body(data) -> dict:
    """The checks PREDICT_BODY_SCHEMA documents (a serializer's JSONField would re-serialize every value)."""
    if not isinstance(data, dict):
        raise ValidationError(
            {"detail": "The body must be a JSON object with 'inputs' (or 'image', or 'text')."}
        )
    if sum(key in data for key in ("inputs", "image", "text")) != 1:
        raise ValidationError({"inputs": ["Send one of 'inputs', 'image' or 'text'."]})
    if "inputs" in data and not isinstance(data["inputs"], dict | list):
        raise ValidationError({"inputs": ["Must be an object (name -> nested list) or a list of tensors."]})
    if "image" in data and not isinstance(data["image"], str):
        raise ValidationError({"image": ["Must be a base64-encoded PNG or JPEG string."]})
    version = data.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise ValidationError({"version": ["Must be a version number (1, 2, …)."]})
    if "webhook" in data and not isinstance(data["webhook"], str):
        raise ValidationError({"webhook": ["Must be an https URL."]})
    return data


def webhook_of(data: dict) -> webhooks.Webhook | None:
    """The body's webhook, checked (resolved: it must reach a public address); a 400 naming the problem."""
    try:
        return webhooks.webhook_from_body(data)
    except webhooks.WebhookRefused as exc:
        raise ValidationError({exc.field: [str(exc)]}) from None


class PredictView(APIView):
    required_scope = "predict"

    @extend_schema(
        operation_id="models_predict",
        summary="Run a model",
        request={"application/json": PREDICT_BODY_SCHEMA},
        examples=[
            OpenApiExample("Named inputs", value={"inputs": {"x": [[0.1, 0.2, 0.3]]}}, request_only=True),
            OpenApiExample(
                "Open Inference Protocol tensors",
                value={
                    "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.3]}]
                },
                request_only=True,
            ),
        ],
        parameters=[
            OpenApiParameter(
                "wait",
                {"type": "number", "minimum": 0, "maximum": 60},
                description="Seconds to wait for the result (default 30, at most 60).",
            ),
            OpenApiParameter(
                "Prefer",
                OpenApiTypes.STR,
                OpenApiParameter.HEADER,
                description="`respond-async`: queue a job and answer 202 at once.",
            ),
        ],
        responses={
            200: PredictResultSerializer,
            202: PredictAcceptedSerializer,
            400: OpenApiResponse(ERROR_SCHEMA, description="Inputs that do not fit the model's signature."),
            401: OpenApiResponse(ERROR_SCHEMA, description="A missing, malformed or revoked key."),
            403: OpenApiResponse(
                ERROR_SCHEMA,
                description="A key without the predict scope, or a gated model you were not granted "
                "(the detail says how to ask).",
            ),
            404: OpenApiResponse(ERROR_SCHEMA, description="No such model (or a private one)."),
            409: OpenApiResponse(
                ERROR_SCHEMA, description="No version is ready yet: one is validating; see Retry-After."
            ),
            413: OpenApiResponse(ERROR_SCHEMA, description="A request body over the limit."),
            429: OpenApiResponse(ERROR_SCHEMA, description="Rate limit or quota exhausted; see Retry-After."),
            503: OpenApiResponse(ERROR_SCHEMA, description="No worker answered in time; retry."),
        },
    )
    def post(self, request, owner: str, name: str):
        timeout = wait_seconds(request)
        data = predict_body(request.data)
        try:
            target = target_find(
                owner=owner, name=name, number=data.get("version"), user=request.user, to_run=True
            )
        except VersionValidating as exc:
            headers = {"Retry-After": str(exc.retry_after)}
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT, headers=headers)
        except VersionNotFound as exc:
            raise NotFound(str(exc)) from None
        except GateClosed as exc:
            raise PermissionDenied(str(exc)) from None
        text = None
        try:
            if "text" in data:
                text = text_request(target, data["text"])
                tensors = text.tensors
            elif "image" in data:
                if not target.task.startswith("image"):
                    raise TensorError("this model takes 'inputs', not an image")
                tensors = decode_image(data["image"], target.preprocessing, target.signature)
            elif isinstance(data["inputs"], dict):
                tensors = decode_named_lists(data["inputs"], target.signature)
            else:
                tensors = decode_oip_tensors(data["inputs"], target.signature)
        except TensorError as exc:
            raise ValidationError({"inputs": [str(exc)]}) from None
        except TextError as exc:
            raise ValidationError({"text": [str(exc)]}) from None
        webhook = webhook_of(data)
        api_key = request.auth if request.auth is not None and hasattr(request.auth, "prefix") else None
        asynchronous = wants_async(request)
        try:
            submission = prediction_submit(
                user=request.user,
                api_key=api_key,
                target=target,
                inputs=tensors,
                source=Prediction.Source.API if api_key else Prediction.Source.WEB,
                bytes_in=int(request.META.get("CONTENT_LENGTH") or 0),
                asynchronous=asynchronous,
                webhook=webhook,
            )
        except (Unavailable, ModelBusy) as exc:
            return unavailable(str(exc))
        if not asynchronous:
            outcome = prediction_wait(
                submission=submission,
                timeout=timeout,
                fall_back_to_job=True,
                user=request.user,
                api_key=api_key,
            )
            ending = ending_of(outcome)
            request_note(outcome=ending.value)
            if ending is Ending.UNAVAILABLE:
                return unavailable(message_of(outcome))
            if ending is not Ending.PENDING:
                return self.result(submission, outcome, text)
        url = request.build_absolute_uri(reverse("prediction-detail", kwargs={"id": submission.id}))
        return Response(
            {"id": submission.id, "status": "queued", "url": url}, status=status.HTTP_202_ACCEPTED
        )

    def result(self, submission, outcome, text=None) -> Response:
        import time

        if ending_of(outcome) is Ending.UNAVAILABLE:
            return unavailable(message_of(outcome))
        body = {
            "id": submission.id,
            "model": submission.target.slug,
            "version": submission.target.number,
            "status": outcome.status,
        }
        if outcome.status == Prediction.Status.SUCCEEDED:
            body["outputs"] = outcome_outputs_json(outcome)
            if text is not None:
                arrays = outcome_arrays(outcome.outputs, outcome.outputs_json)
                body.update(text_results(submission.target, text, arrays))
            else:
                top = outcome_top(outcome, submission.target)
                if top is not None:
                    body["top"] = top
        else:
            body["error"] = outcome.error
        body["latency_ms"] = round((time.monotonic() - submission.started) * 1000, 3)
        return Response(body)


class PredictionFilter(django_filters.FilterSet):
    class Meta:
        model = Prediction
        fields = ["status", "source"]


def own_predictions(request):
    if not request.user.is_authenticated:
        return Prediction.objects.none()
    return Prediction.objects.filter(user=request.user).select_related("version__model__owner")


class PredictionListView(generics.ListAPIView):
    required_scope = "read"
    serializer_class = PredictionSerializer
    filterset_class = PredictionFilter

    def get_queryset(self):
        return own_predictions(self.request)

    @extend_schema(operation_id="predictions_list", summary="Your predictions, newest first")
    def get(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            self.permission_denied(request)
        return super().get(request, *args, **kwargs)


class PredictionDetailView(generics.RetrieveAPIView):
    required_scope = "read"
    serializer_class = PredictionSerializer
    lookup_field = "id"

    def get_queryset(self):
        return own_predictions(self.request)

    @extend_schema(operation_id="predictions_retrieve", summary="One of your predictions")
    def get(self, request, *args, **kwargs):
        if not request.user.is_authenticated:
            self.permission_denied(request)
        return super().get(request, *args, **kwargs)


class PredictionCancelView(APIView):
    required_scope = "predict"

    @extend_schema(
        operation_id="predictions_cancel",
        summary="Cancel a queued or running prediction",
        request=None,
        responses={
            200: PredictionSerializer,
            404: OpenApiResponse(description="Not one of your predictions."),
            409: OpenApiResponse(description="The prediction already finished."),
        },
    )
    def post(self, request, id):
        prediction = get_object_or_404(own_predictions(request), id=id)
        try:
            prediction = ledger.cancel(prediction)
        except ledger.NotCancelable as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(PredictionSerializer(prediction, context={"request": request}).data)
