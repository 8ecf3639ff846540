"""Translations between the catalog and JSON for `/api/v1/models`."""

from __future__ import annotations

import json

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Format, Model, ModelVersion, Task, Visibility, model_name_validator
from .optimization import METHODS, optimization_summary
from .selectors import latest_ready_version, versions_visible_to

PREPROCESSING_LAYOUTS = {"NCHW", "NHWC", "flat"}
PREPROCESSING_MODES = {"L", "RGB"}


def parse_comma_list(value) -> list[str]:
    if isinstance(value, list):
        items = value
    else:
        items = str(value).split(",")
    return [str(item).strip() for item in items if str(item).strip()]


@extend_schema_field({"type": "array", "items": {"type": "string"}})
class CommaSeparatedListField(serializers.Field):
    """A list given as "a, b, c" (multipart) or as a JSON list."""

    def to_internal_value(self, data):
        items = parse_comma_list(data)
        if any(len(item) > 100 for item in items) or len(items) > 1000:
            raise serializers.ValidationError("Use at most 1000 items of at most 100 characters.")
        return items

    def to_representation(self, value):
        return list(value)


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(serializers.Field):
    """A JSON object given as a string (multipart) or as an object."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            if not data.strip():
                return {}
            try:
                data = json.loads(data)
            except ValueError as exc:
                raise serializers.ValidationError("Not valid JSON.") from exc
        if not isinstance(data, dict):
            raise serializers.ValidationError("Expected a JSON object.")
        return data

    def to_representation(self, value):
        return value


EXAMPLE_MAX_BYTES = 1 << 20
EXAMPLE_HELP = (
    'Optional: a predict body\'s `inputs` (JSON), e.g. {"x": [[0.1, 0.2]]}. '
    "The upload check runs the model on it (the upload is refused if it fails) "
    "and the try-it widget starts from it."
)


def is_text_example(value) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and bool(value) and all(isinstance(item, str) for item in value)
    )


def parse_example(value, *, text: bool = False) -> dict | list | str | None:
    """An upload's `example`: JSON text (multipart) or a JSON value; None when not given.

    With `text` (the upload carries a tokenizer) it may also be the text to try: a JSON string or list of
    strings, or any other words, taken as they are.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        if len(value) > EXAMPLE_MAX_BYTES:
            raise serializers.ValidationError(f"The example is over {EXAMPLE_MAX_BYTES} bytes.")
        try:
            value = json.loads(value)  # NaN and ±Infinity literals are welcome here, as in predict bodies
        except ValueError as exc:
            if text:
                return value
            raise serializers.ValidationError(f"Not valid JSON: {exc}.") from exc
        if text and not isinstance(value, dict | list | str):
            return json.dumps(value)  # a number typed as the text to try
    if text and is_text_example(value):
        return value
    if not isinstance(value, dict | list) or not value:
        raise serializers.ValidationError(
            "Expected a predict body's inputs: an object (input name -> nested list) or a list of tensors."
        )
    return value


@extend_schema_field(
    {
        "type": "string",
        "description": "JSON text: an object (input name -> nested list) or a list of Open Inference "
        "Protocol tensors.",
    }
)
class ExampleField(serializers.Field):
    # Parsed in the serializer's validate(): how depends on whether a tokenizer comes with it.
    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return value


def validate_preprocessing(value: dict) -> dict:
    if not value:
        return {}
    errors = []
    for key in ("width", "height"):
        if key in value and not (isinstance(value[key], int) and 1 <= value[key] <= 4096):
            errors.append(f"{key} must be an integer from 1 to 4096.")
    if "layout" in value and value["layout"] not in PREPROCESSING_LAYOUTS:
        errors.append(f"layout must be one of {sorted(PREPROCESSING_LAYOUTS)}.")
    if "mode" in value and value["mode"] not in PREPROCESSING_MODES:
        errors.append(f"mode must be one of {sorted(PREPROCESSING_MODES)}.")
    if "scale" in value and not isinstance(value["scale"], (int, float)):
        errors.append("scale must be a number.")
    for key in ("mean", "std"):
        if key in value and not (
            isinstance(value[key], list) and all(isinstance(v, (int, float)) for v in value[key])
        ):
            errors.append(f"{key} must be a list of numbers.")
    if "std" in value and isinstance(value["std"], list) and any(v == 0 for v in value["std"]):
        errors.append("std must not contain 0.")
    if "features" in value and not (
        isinstance(value["features"], list) and all(isinstance(v, str) for v in value["features"])
    ):
        errors.append("features must be a list of column names.")
    if "example" in value and not isinstance(value["example"], list):
        errors.append("example must be a list of values, one per feature.")
    if errors:
        raise serializers.ValidationError(errors)
    return value


def model_api_url(model: Model) -> str:
    return reverse("api-model", kwargs={"owner": model.owner.username, "name": model.name})


def version_api_url(version: ModelVersion, *, route: str = "api-version") -> str:
    model = version.model
    return reverse(
        route, kwargs={"owner": model.owner.username, "name": model.name, "number": version.number}
    )


TOKENIZER_HELP = (
    "Text models (text-classification, feature-extraction): a Hugging Face tokenizer.json. Predict then "
    'takes {"text": …}; the `example` may be the text to try.'
)


class TokenizerSerializer(serializers.Serializer):
    size = serializers.IntegerField(source="tokenizer_size")
    sha256 = serializers.CharField(source="tokenizer_sha256")


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "description": "What optimizing measured (derived versions only): method, size_before, size_after, "
        "speedup (original's median time / this version's, on this machine), max_abs_diff over the outputs, "
        "agreement (classification: share of inputs whose top label is unchanged; null otherwise), inputs, "
        "runs of each model, min_agreement, low_agreement (true: never the default for predict), summary.",
        "properties": {
            "method": {"type": "string", "enum": list(METHODS)},
            "size_before": {"type": "integer", "nullable": True},
            "size_after": {"type": "integer", "nullable": True},
            "speedup": {"type": "number", "nullable": True},
            "max_abs_diff": {"type": "number", "nullable": True},
            "agreement": {"type": "number", "nullable": True},
            "inputs": {"type": "integer", "nullable": True},
            "low_agreement": {"type": "boolean"},
            "summary": {"type": "string"},
        },
        "additionalProperties": True,
    }
)
class OptimizationField(serializers.Field):
    """A derived version's `optimization`, with the low-agreement mark and the page's sentence."""

    def __init__(self, **kwargs):
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, version):
        if version.derived_from_id is None and not version.optimization:
            return None
        return {
            **version.optimization,
            "low_agreement": version.low_agreement,
            "summary": optimization_summary(version.optimization),
        }


class VersionSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    example = serializers.SerializerMethodField()
    file_url = serializers.SerializerMethodField()
    tokenizer = serializers.SerializerMethodField()
    derived_from = serializers.SlugRelatedField(
        slug_field="number",
        read_only=True,
        allow_null=True,
        help_text="The number of the version this one was optimized from; null for uploads.",
    )
    optimization = OptimizationField()
    llm = serializers.JSONField(
        read_only=True,
        help_text="GGUF chat models: architecture, parameters, quantization, context_length and "
        "chat_template (a boolean), read from the file's header in the sandbox; empty for other formats.",
    )

    class Meta:
        model = ModelVersion
        fields = [
            "number",
            "format",
            "size",
            "sha256",
            "status",
            "reason",
            "signature",
            "notes",
            "example",
            "tokenizer",
            "derived_from",
            "optimization",
            "llm",
            "created_at",
            "url",
            "file_url",
        ]
        read_only_fields = fields

    @extend_schema_field(
        {
            "oneOf": [
                {"type": "object", "additionalProperties": True},
                {"type": "array", "items": {}},
                {"type": "string"},
            ],
            "nullable": True,
        },
    )
    def get_example(self, version):
        return version.example_inputs

    @extend_schema_field(TokenizerSerializer(allow_null=True))
    def get_tokenizer(self, version) -> dict | None:
        return TokenizerSerializer(version).data if version.tokenizer else None

    def get_url(self, version) -> str:
        return version_api_url(version)

    def get_file_url(self, version) -> str | None:
        if version.status != ModelVersion.Status.READY:
            return None
        return version_api_url(version, route="api-version-file")


GATED_HELP = (
    "Public, but run and downloaded only by users the owner approved (they ask with an access request)."
)


class ModelSummarySerializer(serializers.ModelSerializer):
    owner = serializers.CharField(source="owner.username", read_only=True)
    slug = serializers.CharField(read_only=True)
    format = serializers.CharField(source="latest_format", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Model
        fields = [
            "owner",
            "name",
            "slug",
            "task",
            "format",
            "tags",
            "license",
            "labels",
            "visibility",
            "gated",
            "downloads",
            "runs",
            "created_at",
            "updated_at",
            "url",
        ]
        read_only_fields = fields

    def get_url(self, model) -> str:
        return model_api_url(model)


class ModelDetailSerializer(ModelSummarySerializer):
    versions = serializers.SerializerMethodField()
    signature = serializers.SerializerMethodField()

    class Meta(ModelSummarySerializer.Meta):
        fields = [
            *ModelSummarySerializer.Meta.fields,
            "description",
            "preprocessing",
            "versions",
            "signature",
        ]
        read_only_fields = fields

    def get_versions(self, model) -> list[dict]:
        request = self.context.get("request")
        versions = versions_visible_to(request.user if request is not None else None, model)
        return VersionSerializer(versions, many=True, context=self.context).data

    def get_signature(self, model) -> dict:
        latest = latest_ready_version(model)
        return latest.signature if latest else {}


class ModelUpdateSerializer(serializers.ModelSerializer):
    tags = CommaSeparatedListField(required=False)
    labels = CommaSeparatedListField(required=False)
    preprocessing = JSONObjectField(required=False)

    class Meta:
        model = Model
        fields = ["task", "description", "tags", "license", "labels", "visibility", "gated", "preprocessing"]

    def validate_preprocessing(self, value):
        return validate_preprocessing(value)


class ModelUploadSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100, validators=[model_name_validator])
    file = serializers.FileField(allow_empty_file=True)
    task = serializers.ChoiceField(choices=Task.choices, default=Task.OTHER)
    description = serializers.CharField(required=False, allow_blank=True, default="", max_length=100_000)
    tags = CommaSeparatedListField(required=False, default=list)
    license = serializers.CharField(required=False, allow_blank=True, default="", max_length=100)
    visibility = serializers.ChoiceField(choices=Visibility.choices, default=Visibility.PUBLIC)
    gated = serializers.BooleanField(required=False, default=False, help_text=GATED_HELP)
    labels = CommaSeparatedListField(required=False, default=list)
    preprocessing = JSONObjectField(required=False, default=dict)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    signature = JSONObjectField(
        required=False,
        default=dict,
        help_text=(
            'TorchScript archives without recorded shapes: {"inputs": [{"name", "datatype", "shape"}]}'
        ),
    )
    example = ExampleField(required=False, default=None, help_text=EXAMPLE_HELP)
    tokenizer = serializers.FileField(required=False, default=None, allow_null=True, help_text=TOKENIZER_HELP)

    def validate_preprocessing(self, value):
        return validate_preprocessing(value)

    def validate(self, attrs):
        return with_parsed_example(attrs)


def with_parsed_example(attrs: dict) -> dict:
    try:
        attrs["example"] = parse_example(attrs.get("example"), text=attrs.get("tokenizer") is not None)
    except serializers.ValidationError as exc:
        raise serializers.ValidationError({"example": exc.detail}) from exc
    return attrs


class VersionUploadSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=10_000)
    signature = JSONObjectField(required=False, default=dict)
    example = ExampleField(required=False, default=None, help_text=EXAMPLE_HELP)
    tokenizer = serializers.FileField(required=False, default=None, allow_null=True, help_text=TOKENIZER_HELP)

    def validate(self, attrs):
        return with_parsed_example(attrs)


def tiny_onnx_example() -> str:
    """A whole ONNX model (Identity, x -> y, FP32 [n, 3]) whose 77 bytes are all ASCII: an example upload that
    runs, for the OpenAPI document (tools that send its examples upload a real model)."""
    return (
        '\x08\x08\x12\x00:A\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x01gZ\x14\n\x01x\x12\x0f\n\r\x08\x01\x12'
        "\t\n\x03\x12\x01n\n\x02\x08\x03b\x14\n\x01y\x12\x0f\n\r\x08\x01\x12\t\n\x03\x12\x01n\n\x02\x08\x03B"
        "\x04\n\x00\x10\x11"
    )


JSON_TEXT = "JSON text (multipart fields are strings)."
UPLOAD_FIELDS = {
    "file": {
        "type": "string",
        "format": "binary",
        "description": "ONNX, TorchScript (torch.jit.save) or torch.export (.pt2); pickles are refused.",
    },
    "notes": {"type": "string", "maxLength": 10_000},
    "signature": {
        "type": "string",
        "description": "TorchScript archives without recorded shapes: "
        '{"inputs": [{"name", "datatype", "shape"}]}, ' + JSON_TEXT,
    },
    "example": {"type": "string", "description": EXAMPLE_HELP + " " + JSON_TEXT},
    "tokenizer": {"type": "string", "format": "binary", "description": TOKENIZER_HELP},
}
# Multipart bodies documented as what is sent: every field a string, lists comma-separated, objects JSON text.
MODEL_UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["name", "file"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
        "task": {"type": "string", "enum": [choice.value for choice in Task], "default": Task.OTHER.value},
        "description": {"type": "string", "maxLength": 100_000, "description": "Model card, in Markdown."},
        "tags": {"type": "string", "description": "Comma-separated."},
        "license": {"type": "string", "maxLength": 100},
        "visibility": {"type": "string", "enum": [choice.value for choice in Visibility]},
        "gated": {"type": "boolean", "description": GATED_HELP},
        "labels": {"type": "string", "description": "Class labels in output order, comma-separated."},
        "preprocessing": {
            "type": "string",
            "description": "Image models: size, mode, mean, std… " + JSON_TEXT,
        },
        **UPLOAD_FIELDS,
    },
    "example": {"name": "identity", "file": tiny_onnx_example(), "example": '{"x": [[1, 2, 3]]}'},
}
VERSION_UPLOAD_SCHEMA = {
    "type": "object",
    "required": ["file"],
    "properties": UPLOAD_FIELDS,
    "example": {"file": tiny_onnx_example(), "notes": "an identity"},
}


class OptimizeSerializer(serializers.Serializer):
    method = serializers.CharField(
        default=METHODS[0],
        help_text="dynamic-int8 (ONNX Runtime dynamic quantization: INT8 weights, activations quantized as "
        "they come) or static-int8 (INT8 weights and activations, calibrated on the version's example and "
        "generated inputs).",
    )

    def validate_method(self, value: str) -> str:
        if value not in METHODS:
            raise serializers.ValidationError(f"Unknown method {value!r}: use one of {', '.join(METHODS)}.")
        return value


class UploadPendingSerializer(serializers.Serializer):
    number = serializers.IntegerField()
    status = serializers.CharField()
    url = serializers.CharField()
    detail = serializers.CharField()


FORMAT_EXTENSIONS = {Format.ONNX: "onnx", Format.TORCHSCRIPT: "pt", Format.TORCH_EXPORT: "pt2"}
