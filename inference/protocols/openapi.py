"""The Open Inference Protocol's paths in the OpenAPI document (`/api/schema/`).

`/v2` is served by plain Django views (`oip.py`), which drf-spectacular does not see; this post-processing
hook (settings.SPECTACULAR_SETTINGS) adds them as API.md describes them, so Swagger UI and generated clients
know them too. The request example is a body the infer path takes as it is for a model with one FP32 input `x`
of shape [-1, 3]; a model's own signature is on its metadata path and its page.
"""

from __future__ import annotations

from ..codec import DATATYPES

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong, in a sentence."}},
}
TENSOR_METADATA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": list(DATATYPES)},
        "shape": {"type": "array", "items": {"type": "integer"}, "description": "-1: any size."},
    },
}
INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string", "description": "Echoed in the answer."},
        "parameters": {
            "type": "object",
            "properties": {"binary_data_output": {"type": "boolean"}},
            "additionalProperties": True,
        },
        "inputs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    "name": {"type": "string"},
                    "datatype": {"type": "string", "enum": list(DATATYPES)},
                    "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "data": {"type": "array", "items": {}, "description": "Flat, row-major."},
                    "parameters": {
                        "type": "object",
                        "properties": {"binary_data_size": {"type": "integer", "minimum": 0}},
                        "additionalProperties": True,
                    },
                },
            },
        },
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "additionalProperties": True},
                },
            },
            "description": "Only these outputs (default: all).",
        },
    },
}
INFER_EXAMPLE = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [0.1, 0.2, 0.3]}]}
INFER_RESPONSE = {
    "type": "object",
    "required": ["model_name", "model_version", "id", "outputs"],
    "properties": {
        "model_name": {"type": "string", "description": "owner/name"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "datatype", "shape"],
                "properties": {
                    **TENSOR_METADATA["properties"],
                    "data": {"type": "array", "items": {}},
                    "parameters": {"type": "object", "additionalProperties": True},
                },
            },
        },
    },
}
MODEL_METADATA = {
    "type": "object",
    "required": ["name", "versions", "platform", "inputs", "outputs"],
    "properties": {
        "name": {"type": "string"},
        "versions": {"type": "array", "items": {"type": "string"}},
        "platform": {"type": "string"},
        "inputs": {"type": "array", "items": TENSOR_METADATA},
        "outputs": {"type": "array", "items": TENSOR_METADATA},
    },
}
READY = {"type": "object", "properties": {"name": {"type": "string"}, "ready": {"type": "boolean"}}}
SERVER_METADATA = {
    "type": "object",
    "required": ["name", "version", "extensions"],
    "properties": {
        "name": {"type": "string"},
        "version": {"type": "string"},
        "extensions": {"type": "array", "items": {"type": "string"}},
    },
}
ANY_OBJECT = {"type": "object", "additionalProperties": True}
COUNT_AND_TIME = {
    "type": "object",
    "properties": {"count": {"type": "integer"}, "ns": {"type": "integer", "description": "Cumulative."}},
}
MODEL_STATISTICS = {
    "type": "object",
    "required": ["model_stats"],
    "properties": {
        "model_stats": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "version": {"type": "string"},
                    "last_inference": {"type": "integer", "description": "Milliseconds since the epoch."},
                    "inference_count": {"type": "integer"},
                    "execution_count": {"type": "integer"},
                    "inference_stats": {"type": "object", "additionalProperties": COUNT_AND_TIME},
                    "batch_stats": {"type": "array", "items": ANY_OBJECT},
                    "memory_usage": {"type": "array", "items": ANY_OBJECT},
                },
            },
        }
    },
}


def _errors(*statuses: int) -> dict:
    words = {
        400: "Inputs that do not fit the model's signature, or a malformed body.",
        401: "A missing, malformed or revoked key.",
        403: "A key without the scope, or a gated model you were not granted.",
        404: "No such model (or a private one).",
        409: "No version is ready yet: one is validating; see Retry-After.",
        413: "A request body over the limit.",
        429: "Rate limit or quota exhausted; see Retry-After.",
        503: "No worker answered in time, or a dependency is down; see Retry-After.",
    }
    return {
        str(status): {"description": words[status], "content": {"application/json": {"schema": ERROR}}}
        for status in statuses
    }


def _path_parameters(with_version: bool) -> list[dict]:
    names = [("owner", "The model's owner."), ("name", "The model's name.")]
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}, "description": text}
        for name, text in names
    ]
    if with_version:
        parameters.append(
            {
                "name": "version",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
                "description": "A version number (1, 2, …); without this part, the latest ready version.",
            }
        )
    return parameters


def _operations(with_version: bool) -> dict[str, dict]:
    model = "/v2/models/{owner}/{name}" + ("/versions/{version}" if with_version else "")
    suffix = "_version" if with_version else ""
    parameters = _path_parameters(with_version)
    read = [{"apiKey": []}, {}]  # a key is optional here; one sent needs the read scope
    return {
        f"{model}/infer": {
            "post": {
                "operationId": f"v2_infer{suffix}",
                "summary": "Run a model (Open Inference Protocol v2, as tritonclient and KServe call it)",
                "tags": ["v2"],
                "parameters": [
                    *parameters,
                    {
                        "name": "Inference-Header-Content-Length",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                        "description": "Binary tensor data extension: the JSON header's length; the tensors' "
                        "bytes follow it in the body.",
                    },
                ],
                "security": [{"apiKey": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": INFER_REQUEST, "example": INFER_EXAMPLE},
                        "application/octet-stream": {
                            "schema": {
                                "type": "string",
                                "format": "binary",
                                "description": "The JSON header, then the tensors' bytes.",
                            },
                        },
                    },
                },
                "responses": {
                    "200": {
                        "description": "The outputs (binary ones after the JSON header when asked for).",
                        "content": {
                            "application/json": {"schema": INFER_RESPONSE},
                            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                        },
                    },
                    **_errors(400, 401, 403, 404, 409, 413, 429, 503),
                },
            }
        },
        model: {
            "get": {
                "operationId": f"v2_model_metadata{suffix}",
                "summary": "A model's inputs and outputs",
                "tags": ["v2"],
                "parameters": parameters,
                "security": read,
                "responses": {
                    "200": {
                        "description": "Metadata.",
                        "content": {"application/json": {"schema": MODEL_METADATA}},
                    },
                    **_errors(401, 403, 404, 409),
                },
            }
        },
        f"{model}/ready": {
            "get": {
                "operationId": f"v2_model_ready{suffix}",
                "summary": "Whether the model can serve the caller now",
                "tags": ["v2"],
                "parameters": parameters,
                "security": read,
                "responses": {
                    "200": {"description": "Ready.", "content": {"application/json": {"schema": READY}}},
                    "503": {"description": "Not ready.", "content": {"application/json": {"schema": READY}}},
                    **_errors(401, 403, 404, 409),
                },
            }
        },
        f"{model}/stats": {
            "get": {
                "operationId": f"v2_model_statistics{suffix}",
                "summary": "Counts and cumulative times (Triton's statistics extension)",
                "tags": ["v2"],
                "parameters": parameters,
                "security": read,
                "responses": {
                    "200": {
                        "description": "One entry per version (every ready one, or the one asked for).",
                        "content": {"application/json": {"schema": MODEL_STATISTICS}},
                    },
                    **_errors(401, 403, 404, 409),
                },
            }
        },
    }


def add_open_inference_protocol(result, generator, request, public):
    """drf-spectacular post-processing hook: the `/v2` paths."""
    paths = result.setdefault("paths", {})
    for with_version in (False, True):
        paths.update(_operations(with_version))
    paths["/v2"] = {
        "get": {
            "operationId": "v2_server_metadata",
            "summary": "The server's name, version and protocol extensions",
            "tags": ["v2"],
            "security": [{}],
            "responses": {
                "200": {
                    "description": "Metadata.",
                    "content": {"application/json": {"schema": SERVER_METADATA}},
                }
            },
        }
    }
    health = {"type": "object", "additionalProperties": True}
    for path, operation_id, summary in (
        ("/v2/health/live", "v2_health_live", "The server is up"),
        ("/v2/health/ready", "v2_health_ready", "The server and what it needs are up"),
    ):
        paths[path] = {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["v2"],
                "security": [{}],
                "responses": {
                    "200": {"description": "Yes.", "content": {"application/json": {"schema": health}}},
                    "503": {
                        "description": "No; see Retry-After.",
                        "content": {"application/json": {"schema": health}},
                    },
                },
            }
        }
    return result
