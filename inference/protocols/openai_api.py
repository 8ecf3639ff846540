"""The OpenAI-compatible API under `/v1/` (API.md, "Generative models"): models, chat completions,
completions (plain answers and Server-Sent Events streams) and embeddings.

Thin: the bodies are checked in `openai_requests.py`, a call runs in `llm/generation.py` (admission, tokens,
the ledger), embeddings take the text prediction path every other protocol takes (`services.py`,
`text.py`). Keys, scopes, visibility and gates are the ones `/api/v1` uses; errors have OpenAI's shape.
"""

from __future__ import annotations

import base64
import json
import time

import numpy as np
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST
from rest_framework.exceptions import APIException, AuthenticationFailed

from marketplace import selectors
from marketplace.models import Format, Task
from portal.authentication import authenticate_bearer
from portal.models import ApiKey

from ..llm.generation import GenerationRefused, GenerationUnavailable, generation_start
from ..models import Prediction
from ..scheduling.queue import ModelBusy, Unavailable
from ..services import (
    GateClosed,
    VersionNotFound,
    VersionValidating,
    prediction_submit,
    prediction_wait,
    target_find,
)
from ..text import TextError, outcome_arrays, text_request, text_results
from . import openai_requests as checks
from .outcomes import HTTP_STATUS, Ending, ending_of, message_of, retry_headers
from .outcomes import OPENAI_TYPE as ERROR_TYPES


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, *, param=None, code=None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self) -> JsonResponse:
        body = {"error": {"message": self.message, "type": ERROR_TYPES[self.status], "param": self.param}}
        body["error"]["code"] = self.code
        response = JsonResponse(body, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def openai_view(methods):
    """A view of this API: its errors in OpenAI's shape. CSRF-exempt for keys; a page's session call is
    checked in `caller`."""

    def decorate(view):
        def wrapped(request, *args, **kwargs):
            try:
                return view(request, *args, **kwargs)
            except OpenAIError as error:
                return error.response()
            except checks.InvalidRequest as error:
                return OpenAIError(400, str(error), param=error.param).response()
            except GenerationRefused as error:
                return OpenAIError(400, str(error), param=error.param, code=error.code).response()
            except (GenerationUnavailable, Unavailable, ModelBusy) as error:
                return OpenAIError(503, str(error), headers={"Retry-After": "5"}).response()
            except AuthenticationFailed as error:
                return OpenAIError(401, str(error.detail), code="invalid_api_key").response()
            except APIException as error:  # QuotaExceeded and the rate limiter's own refusals
                detail = error.detail.get("detail") if isinstance(error.detail, dict) else error.detail
                status = error.status_code if error.status_code in ERROR_TYPES else 503
                headers = dict(getattr(error, "headers", {}) or {})
                if getattr(error, "wait", None):
                    headers.setdefault("Retry-After", str(int(error.wait)))
                code = getattr(error, "limit_name", None) or getattr(error, "default_code", None)
                return OpenAIError(status, str(detail), code=code, headers=headers).response()

        return csrf_exempt(methods(wrapped))

    return decorate


def caller(request, scope: str) -> tuple[object, ApiKey | None]:
    """The key's user and key; or, for the chat on a model page, the signed-in visitor (no key) once the
    request passes Django's CSRF check, as the site's own API calls from a page do."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            check = CsrfViewMiddleware(lambda _: None)
            check.process_request(request)  # reads the CSRF cookie, as DRF's session authentication does
            refusal = check.process_view(request, None, (), {})
            if refusal is not None:
                raise OpenAIError(403, "CSRF check failed: send the page's X-CSRFToken header.", code="csrf")
            return user, None
        raise OpenAIError(
            401, "No API key: send it as 'Authorization: Bearer <key>'.", code="invalid_api_key"
        )
    key = authenticate_bearer(header)
    if not key.has_scope(scope):
        raise OpenAIError(403, f"This API key lacks the '{scope}' scope.", code="insufficient_scope")
    return key.user, key


def request_body(request) -> dict:
    try:
        raw = request.body
    except RequestDataTooBig:
        raise OpenAIError(413, "The request body is over the size limit.") from None
    return checks.parse_body(raw)


def runnable_target(user, body: dict, *, task: str):
    owner, name = checks.model_name(body)
    try:
        target = target_find(owner=owner, name=name, number=None, user=user, to_run=True)
    except VersionValidating as validating:
        raise OpenAIError(
            409,
            str(validating),
            param="model",
            code="model_validating",
            headers={"Retry-After": str(validating.retry_after)},
        ) from None
    except VersionNotFound:
        raise OpenAIError(
            404,
            f"The model '{owner}/{name}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        ) from None
    except GateClosed as gate:
        raise OpenAIError(403, str(gate), param="model", code="gated_model") from None
    generative = target.task == Task.TEXT_GENERATION and target.format == Format.GGUF
    if task == Task.TEXT_GENERATION and not generative:
        raise OpenAIError(
            404,
            f"The model '{owner}/{name}' is not a chat model (task text-generation, a GGUF file).",
            param="model",
            code="model_not_found",
        )
    if task == Task.FEATURE_EXTRACTION and not (target.task == Task.FEATURE_EXTRACTION and target.takes_text):
        raise OpenAIError(
            404,
            f"Model '{owner}/{name}' is not a text embedding model (feature-extraction, with a tokenizer).",
            param="model",
            code="model_not_found",
        )
    return target


# --- GET /v1/models -----------------------------------------------------------------------------------------


@openai_view(require_GET)
def models_list(request):
    user, _ = caller(request, "read")
    models = selectors.listed_models(user).filter(task__in=[Task.TEXT_GENERATION, Task.FEATURE_EXTRACTION])
    data = [
        {
            "id": model.slug,
            "object": "model",
            "created": int(model.created_at.timestamp()),
            "owned_by": model.owner.username,
        }
        for model in models.order_by("owner__username", "name")
        if selectors.may_run(user, model_id=model.id, owner_id=model.owner_id, gated=model.gated)
    ]
    return JsonResponse({"object": "list", "data": data})


# --- POST /v1/chat/completions and /v1/completions ----------------------------------------------------------


@openai_view(require_POST)
def chat_completions(request):
    return _generate(request, chat=True)


@openai_view(require_POST)
def completions(request):
    return _generate(request, chat=False)


def _generate(request, *, chat: bool):
    user, key = caller(request, "predict")
    body = request_body(request)
    checked = checks.chat_request(body) if chat else checks.completion_request(body)
    stream, include_usage = checks.stream_settings(body)
    target = runnable_target(user, body, task=Task.TEXT_GENERATION)
    checked.source = Prediction.Source.API if key is not None else Prediction.Source.WEB
    # The data plane tells when the caller goes away (inference.dataplane.bridge); gunicorn does not.
    on_hangup = request.META.get("modelport.on_hangup")
    generation = generation_start(user=user, api_key=key, target=target, request=checked, on_hangup=on_hangup)
    answer_id = ("chatcmpl-" if chat else "cmpl-") + generation.id.replace("-", "")
    created = int(time.time())
    if stream:
        events = _events(
            generation, chat=chat, answer_id=answer_id, created=created, include_usage=include_usage
        )
        response = StreamingHttpResponse(events, content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    try:
        text = generation.text()
    finally:
        generation.close()
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None}
    else:
        choice = {"index": 0, "text": text, "logprobs": None}
    choice["finish_reason"] = generation.finish_reason
    return JsonResponse(
        {
            "id": answer_id,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": target.slug,
            "choices": [choice],
            "usage": generation.usage,
        }
    )


def _events(generation, *, chat: bool, answer_id: str, created: int, include_usage: bool):
    """The stream as OpenAI sends it: (chat) a first chunk with the role, a chunk per piece, a last chunk with
    an empty delta and the finish reason, the usage chunk if asked, then `[DONE]`. A client that hangs up
    closes this generator (the server's write failed): `close()` records the call and stops the model."""
    model = generation.target.slug

    def chunk(choice: dict | None, **extra) -> bytes:
        payload = {
            "id": answer_id,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": [] if choice is None else [choice],
        }
        if include_usage:
            payload["usage"] = None
        payload.update(extra)
        return b"data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"

    def piece(text: str | None, finish_reason=None, *, role: bool = False) -> bytes:
        if chat:
            delta = (
                {"role": "assistant", "content": ""} if role else ({} if text is None else {"content": text})
            )
            return chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason})
        return chunk({"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason})

    try:
        if chat:
            yield piece(None, role=True)
        try:
            for text in generation.pieces():
                yield piece(text)
        except GenerationUnavailable as exc:
            error = {"message": str(exc), "type": ERROR_TYPES[503], "param": None, "code": None}
            yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
            return
        yield piece(None, generation.finish_reason)
        if include_usage:
            yield chunk(None, usage=generation.usage)
        yield b"data: [DONE]\n\n"
    finally:
        generation.close()


# --- POST /v1/embeddings ------------------------------------------------------------------------------------


@openai_view(require_POST)
def embeddings(request):
    user, key = caller(request, "predict")
    body = request_body(request)
    texts, encoding = checks.embedding_inputs(body)
    target = runnable_target(user, body, task=Task.FEATURE_EXTRACTION)
    try:
        text = text_request(target, texts)
    except TextError as exc:
        raise checks.InvalidRequest(str(exc), param="input") from None
    submission = prediction_submit(
        user=user,
        api_key=key,
        target=target,
        inputs=text.tensors,
        source=Prediction.Source.API,
        bytes_in=int(request.META.get("CONTENT_LENGTH") or 0),
    )
    outcome = prediction_wait(
        submission=submission, timeout=30, fall_back_to_job=False, user=user, api_key=key
    )
    ending = ending_of(outcome)
    if ending is not Ending.SUCCEEDED:
        if HTTP_STATUS[ending] == 503:
            raise OpenAIError(503, message_of(outcome), headers=retry_headers(ending))
        raise OpenAIError(
            HTTP_STATUS[ending], f"The model failed on this input: {outcome.error}", param="input"
        )
    vectors = text_results(target, text, outcome_arrays(outcome.outputs, outcome.outputs_json)).get(
        "embeddings"
    )
    if vectors is None:
        raise OpenAIError(400, "This model's outputs are not one vector per text.", param="model")
    tokens = int(np.asarray(text.attention_mask).sum())
    data = [
        {"object": "embedding", "index": index, "embedding": _encoded(vector, encoding)}
        for index, vector in enumerate(vectors)
    ]
    return JsonResponse(
        {
            "object": "list",
            "data": data,
            "model": target.slug,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def _encoded(vector: list[float], encoding: str):
    if encoding == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()
    return vector


def not_found(request, path: str = ""):
    return OpenAIError(404, f"No such endpoint: /v1/{path}.").response()
