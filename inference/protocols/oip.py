"""Open Inference Protocol v2 endpoints (KServe / Triton compatible)."""

from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from rest_framework.exceptions import AuthenticationFailed

from marketplace.models import ModelVersion
from portal import fastjson
from portal.authentication import authenticate_bearer
from portal.celery import app as celery_app
from portal.logs import request_note
from portal.outages import RETRY_AFTER_SECONDS

from ..codec import BinaryBody, TensorError, decode_oip_tensors, encode_outputs_oip
from ..models import Prediction
from ..runtimes import platform_of
from ..scheduling import queue
from ..services import (
    GateClosed,
    Outcome,
    Submission,
    Target,
    VersionNotFound,
    VersionValidating,
    prediction_submit,
    prediction_wait,
    target_find,
)
from ..statistics import model_stats
from ..text import OIP_EMBEDDINGS_OUTPUT, TextError, oip_text_request, with_text_outputs
from .outcomes import HTTP_STATUS, Ending, ending_of, message_of, retry_headers


@require_GET
def health_live(request):
    return JsonResponse({"live": True})


def _database_reachable() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _broker_reachable() -> bool:
    try:
        with celery_app.connection_for_write(settings.CELERY_BROKER_URL) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        return True
    except Exception:
        return False


def _worker_serving() -> bool:
    """A worker's supervisor heartbeat seen in the last few seconds (`queue.heartbeat` expires in 3 s)."""
    try:
        return queue.serving()
    except Exception:
        return False


def _cache_reachable() -> bool:
    """Redis, which holds cached API keys, rate-limit and quota counters: no API call is served without."""
    try:
        from django_redis import get_redis_connection

        return bool(get_redis_connection("default").ping())
    except Exception:
        return False


def readiness_checks() -> dict[str, bool]:
    checks = {"database": _database_reachable(), "broker": _broker_reachable()}
    if settings.REDIS_URL:
        checks["cache"] = _cache_reachable()
    if queue.enabled():
        checks["worker"] = _worker_serving()
    return checks


@require_GET
def health_ready(request):
    checks = readiness_checks()
    ready = all(checks.values())
    # Not ready is a 503 like any other dependency outage: the caller may retry, and is told when.
    headers = None if ready else {"Retry-After": str(RETRY_AFTER_SECONDS)}
    return JsonResponse({"ready": ready, "checks": checks}, status=200 if ready else 503, headers=headers)


# --- models and inference -----------------------------------------------------------------------------------

SERVER_NAME = "modelport"
SERVER_VERSION = "1.0.0"


def error(message: str, status: int, headers: dict | None = None) -> JsonResponse:
    return JsonResponse({"error": message}, status=status, headers=headers)


@require_GET
def server_metadata(request):
    return JsonResponse(
        {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": ["binary_tensor_data"]}
    )


class V2Error(Exception):
    def __init__(self, message: str, status: int, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


def _caller(authorization: str, *, scope: str, key_required: bool):
    """The key's user (or None without a key, when none is required). A key sent must have `scope`."""
    if not authorization:
        if key_required:
            raise V2Error("This endpoint needs an API key: Authorization: Bearer <key>.", 401)
        return None, None
    try:
        key = authenticate_bearer(authorization)
    except AuthenticationFailed as exc:
        raise V2Error(str(exc.detail), 401) from None
    if not key.has_scope(scope):
        raise V2Error(f"This API key lacks the '{scope}' scope.", 403)
    return key.user, key


def _target(authorization: str, owner, name, number, *, to_run=False, infer=False):
    """Metadata, ready and stats are public for public models; a key sent for them needs `read`. Inference
    needs a key with `predict`."""
    scope = "predict" if infer else "read"
    user, key = _caller(authorization, scope=scope, key_required=infer)
    try:
        return user, key, target_find(owner=owner, name=name, number=number, user=user, to_run=to_run)
    except VersionValidating as exc:
        raise V2Error(str(exc), 409, {"Retry-After": str(exc.retry_after)}) from None
    except VersionNotFound as exc:
        raise V2Error(str(exc), 404) from None
    except GateClosed as exc:
        raise V2Error(str(exc), 403) from None


def _authorization(request) -> str:
    return request.META.get("HTTP_AUTHORIZATION", "")


def v2_view(view):
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except V2Error as exc:
            return error(str(exc), exc.status, exc.headers)

    wrapper.__name__ = view.__name__
    wrapper.__doc__ = view.__doc__
    return csrf_exempt(wrapper)


@v2_view
@require_GET
def model_metadata(request, owner: str, name: str, number: int | None = None):
    _, _, target = _target(_authorization(request), owner, name, number)
    signature = target.signature
    return JsonResponse(
        {
            "name": target.slug,
            "versions": [str(n) for n in target.versions] if number is None else [str(number)],
            "platform": platform_of(target.format),
            "inputs": signature.get("inputs", []),
            "outputs": signature.get("outputs", []),
        }
    )


@v2_view
@require_GET
def model_ready(request, owner: str, name: str, number: int | None = None):
    # "Can it serve this caller": a gated model the caller was not granted is not ready for them (403).
    _, _, target = _target(_authorization(request), owner, name, number, to_run=True)
    if queue.enabled() and not queue.serving(target.queue):
        return JsonResponse({"name": target.slug, "ready": False}, status=503)
    return JsonResponse({"name": target.slug, "ready": True})


# --- inference: read, run, answer (the view here; the data plane composes the same steps without Django) ----


@dataclass
class InferCall:
    """A checked inference request, ready to run."""

    user: object
    key: object
    target: Target
    tensors: dict
    text: object  # text.TextRequest of a text model's request, else None
    requested: list | None
    binary_default: bool
    request_id: object  # the request's own "id", echoed in the answer
    bytes_in: int


@dataclass
class Answer:
    body: bytes
    content_type: str = "application/json"
    headers: dict = field(default_factory=dict)
    status: int = 200


def infer_read(
    *, authorization: str, owner: str, name: str, number: int | None, body: bytes, header_length: str | None
) -> InferCall:
    """Check the caller, the model and the request (JSON, or JSON then binary tensors); raise V2Error."""
    user, key, target = _target(authorization, owner, name, number, to_run=True, infer=True)
    bytes_in = len(body)
    binary = None
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise V2Error("Inference-Header-Content-Length must be an integer.", 400) from None
        if not 0 <= length <= len(body):
            raise V2Error("Inference-Header-Content-Length is larger than the request body.", 400)
        body, binary = body[:length], BinaryBody(body[length:])
    try:
        request_json = fastjson.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise V2Error(f"Malformed JSON: {exc}", 400) from None
    if not isinstance(request_json, dict) or not isinstance(request_json.get("inputs"), list):
        raise V2Error("The request must be a JSON object with an 'inputs' list.", 400)
    requested = request_json.get("outputs")
    if requested is not None and not isinstance(requested, list):
        raise V2Error("'outputs' must be a list.", 400)
    try:
        text = oip_text_request(request_json["inputs"], binary, target)
    except TextError as exc:
        raise V2Error(str(exc), 400) from None
    output_names = oip_output_names(target, text)
    for output in requested or []:
        if not isinstance(output, dict) or output.get("name") not in output_names:
            raise V2Error(f"Unknown output {output!r}: the model's outputs are {output_names}.", 400)
    try:
        tensors = (
            text.tensors
            if text is not None
            else decode_oip_tensors(request_json["inputs"], target.signature, binary)
        )
    except TensorError as exc:
        raise V2Error(str(exc), 400) from None
    return InferCall(
        user=user,
        key=key,
        target=target,
        tensors=tensors,
        text=text,
        requested=requested,
        binary_default=bool((request_json.get("parameters") or {}).get("binary_data_output", False)),
        request_id=request_json.get("id"),
        bytes_in=bytes_in,
    )


def infer_submit(call: InferCall) -> Submission:
    try:
        return prediction_submit(
            user=call.user,
            api_key=call.key,
            target=call.target,
            inputs=call.tensors,
            source=Prediction.Source.V2,
            bytes_in=call.bytes_in,
        )
    except (queue.Unavailable, queue.ModelBusy) as exc:
        raise V2Error(str(exc), 503, {"Retry-After": "1"}) from None


def infer_wait_seconds() -> float:
    """How long an inference waits for its answer: the model's time limit, and a margin for the way back."""
    return settings.PREDICTION_TIME_LIMIT + 5


def infer_answer(call: InferCall, submission: Submission, outcome: Outcome) -> Answer:
    ending = ending_of(outcome)
    request_note(outcome=ending.value)
    if ending is not Ending.SUCCEEDED:
        raise V2Error(message_of(outcome), HTTP_STATUS[ending], retry_headers(ending))
    outputs = outcome.outputs
    if outputs is None:  # the job path stored JSON
        outputs = _arrays_from_json(outcome.outputs_json)
    if call.text is not None:
        outputs = with_text_outputs(call.target, call.text, outputs)
    try:
        described, chunks = encode_outputs_oip(outputs, call.requested, call.binary_default)
    except TensorError as exc:
        raise V2Error(str(exc), 400) from None
    response_json = {
        "model_name": call.target.slug,
        "model_version": str(call.target.number),
        "id": str(call.request_id or submission.id),
        "outputs": described,
    }
    head = fastjson.dumps(response_json)
    if not chunks:
        return Answer(head)
    return Answer(
        head + b"".join(chunks),
        content_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(head))},
    )


@v2_view
def model_infer(request, owner: str, name: str, number: int | None = None):
    if request.method != "POST":
        return error("Use POST.", 405)
    call = infer_read(
        authorization=_authorization(request),
        owner=owner,
        name=name,
        number=number,
        body=request.body,
        header_length=request.headers.get("Inference-Header-Content-Length"),
    )
    submission = infer_submit(call)
    outcome = prediction_wait(
        submission=submission,
        timeout=infer_wait_seconds(),
        fall_back_to_job=False,
        user=call.user,
        api_key=call.key,
    )
    answer = infer_answer(call, submission, outcome)
    return HttpResponse(answer.body, content_type=answer.content_type, headers=answer.headers)


@v2_view
@require_GET
def model_statistics(request, owner: str, name: str, number: int | None = None):
    """Triton's statistics extension: the version's counts and times, or every ready version's."""
    _, _, target = _target(_authorization(request), owner, name, number)
    numbers = [target.number] if number is not None else target.versions
    versions = ModelVersion.objects.filter(model_id=target.model_id, number__in=numbers).order_by("number")
    pairs = list(versions.values_list("number", "id"))
    return JsonResponse(model_stats(name=target.slug, versions=pairs))


def oip_output_names(target, text) -> list[str]:
    names = [spec["name"] for spec in target.signature.get("outputs", [])]
    return (
        [*names, OIP_EMBEDDINGS_OUTPUT] if text is not None and target.task == "feature-extraction" else names
    )


def _arrays_from_json(outputs: list[dict]):
    import numpy as np

    from ..codec import DATATYPES

    arrays = {}
    for output in outputs:
        if output["datatype"] == "BYTES":
            array = np.empty(len(output["data"]), dtype=object)
            array[:] = [item.encode() for item in output["data"]]
        else:
            array = np.asarray(output["data"], dtype=DATATYPES[output["datatype"]])
        arrays[output["name"]] = array.reshape(output["shape"])
    return arrays
