"""`/v2/…/infer` answered on the event loop: the view's own steps (`inference.v2`: `infer_read`,
`infer_submit`, `infer_answer`) without Django's request cycle, which cost as much CPU as the rest of a call.

The checks and the admission run in a thread (a cache miss queries the database, which Django refuses to do
from the event loop); the wait for a runner pool on this host (`runners.link`) holds no thread; the answer is
encoded on the loop. Each request gets what the middleware gives the view's answers: its id and log line,
`RateLimit-*`, the security headers, the `{"error"}` shapes of quota refusals and outages.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from concurrent.futures import Executor
from types import SimpleNamespace

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware

from portal import throttles
from portal.logs import (
    REQUEST_ID_HEADER,
    RequestRecord,
    current_request,
    key_prefix_of,
    request_finished,
    request_id_from,
)
from portal.middleware import RateLimitHeadersMiddleware
from portal.quotas import RequestQuotaState, current_request_state
from portal.security import ContentSecurityPolicyMiddleware

from .. import services
from ..middleware import V2ErrorMiddleware, v2_error
from ..runners.link import BUSY, LinkLost
from ..v2 import INFER_WAIT_SECONDS, Answer, InferCall, V2Error, infer_answer, infer_read, infer_submit
from .bridge import read_whole_body

logger = logging.getLogger(__name__)

INFER_ROUTES = ("v2-model-infer", "v2-version-infer")

_errors = V2ErrorMiddleware(get_response=None)
_rate_limit_headers = RateLimitHeadersMiddleware(get_response=None)


class _Probe(HttpRequest):
    def __init__(self, secure: bool):
        super().__init__()
        self.method, self.path = "POST", "/v2/models/owner/name/infer"
        self.path_info = self.path
        self.secure = secure

    def _get_scheme(self) -> str:
        return "https" if self.secure else "http"


@functools.cache
def security_headers(secure: bool) -> tuple[tuple[bytes, bytes], ...]:
    """The headers Django's security middleware gives a /v2 answer, found once by running it on one."""
    chain = SecurityMiddleware(
        ContentSecurityPolicyMiddleware(
            XFrameOptionsMiddleware(lambda request: HttpResponse(content_type="application/json"))
        )
    )
    response = chain(_Probe(secure))
    return tuple(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.items()
        if name.lower() not in ("content-type", "content-length")
    )


def is_secure(scope: dict, headers: dict[bytes, bytes]) -> bool:
    """As `HttpRequest.is_secure` says it, behind a TLS proxy (SECURE_PROXY_SSL_HEADER) or not."""
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        name, value = proxy_header
        sent = headers.get(name.removeprefix("HTTP_").replace("_", "-").lower().encode("latin-1"), b"")
        return sent.decode("latin-1").split(",")[0].strip() == value
    return scope.get("scheme") == "https"


def takes(scope: dict, headers: dict[bytes, bytes]) -> bool:
    """Whether this path answers the request; one the site must redirect to HTTPS goes to Django."""
    return not settings.SECURE_SSL_REDIRECT or is_secure(scope, headers)


class InferEndpoint:
    routes = INFER_ROUTES
    takes = staticmethod(takes)

    def __init__(self, threads: Executor, body_limit: int):
        self.threads = threads
        self.body_limit = body_limit

    async def __call__(self, scope: dict, receive, send, route: dict, headers: dict[bytes, bytes]) -> None:
        loop = asyncio.get_running_loop()
        record = RequestRecord(id=request_id_from(_header(headers, b"x-request-id")))
        state = RequestQuotaState()
        context = contextvars.copy_context()
        context.run(current_request.set, record)
        context.run(current_request_state.set, state)
        context.run(throttles.current_request.set, _client(scope, headers))

        def in_thread(function, *args):
            return loop.run_in_executor(self.threads, context.run, function, *args)

        body, gone = await read_whole_body(receive, self.body_limit)
        if gone:
            return
        call = None
        try:
            if len(body) > self.body_limit:
                raise V2Error(f"The request body is over the limit of {self.body_limit} bytes.", 413)
            call, submission = await in_thread(self._admit, route, headers, body)
            outcome = await self._outcome(call, submission, in_thread)
            answer = context.run(infer_answer, call, submission, outcome)
        except Exception as exc:  # noqa: BLE001 - every failure is answered in the protocol's shape
            answer = context.run(_error_answer, scope["path"], exc)
        if state.admission is not None or state.rejection is not None or state.api_key is None:
            limits = _rate_limit_headers.headers_for(_NO_USER, state)
        else:  # refused after the key was read: the window's headers are read from Redis
            limits = await in_thread(_rate_limit_headers.headers_for, _NO_USER, state)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": _response_headers(answer, record, limits, is_secure(scope, headers)),
            }
        )
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})
        extra = {"method": "POST", "path": scope["path"]}
        prefix = key_prefix_of(_header(headers, b"authorization") or "")
        if prefix:
            extra["key_prefix"] = prefix
        if call is not None:
            extra["user"] = call.user.pk
        context.run(request_finished, record=record, protocol="v2", status=answer.status, extra=extra)

    @staticmethod
    def _admit(route: dict, headers: dict[bytes, bytes], body: bytes):
        try:
            call = infer_read(
                authorization=_header(headers, b"authorization") or "",
                owner=route["owner"],
                name=route["name"],
                number=route.get("number"),
                body=body,
                header_length=_header(headers, b"inference-header-content-length"),
            )
            return call, infer_submit(call)
        finally:
            # What Django does as each request ends (its signals do not run here): a connection that broke
            # or outlived CONN_MAX_AGE is closed, and opened anew (health-checked) when next needed.
            connection = connections[DEFAULT_DB_ALIAS]
            if connection.connection is not None:
                connection.close_if_unusable_or_obsolete()

    @staticmethod
    async def _outcome(call: InferCall, submission: services.Submission, in_thread) -> services.Outcome:
        if submission.reply is None:  # the Redis queue (another host's pool) or the job path
            return await in_thread(
                functools.partial(
                    services.prediction_wait,
                    submission=submission,
                    timeout=INFER_WAIT_SECONDS,
                    fall_back_to_job=False,
                    user=call.user,
                    api_key=call.key,
                )
            )
        reply = asyncio.wrap_future(submission.reply)
        done, _ = await asyncio.wait({reply}, timeout=INFER_WAIT_SECONDS)
        if not done:
            return await in_thread(services.link_gave_up, submission, False)
        try:
            answer, outputs = reply.result()
        except LinkLost as exc:
            return await in_thread(services.link_lost, submission, exc)
        if answer["status"] == BUSY:
            return await in_thread(services.link_refused, submission, answer["depth"])
        return services.link_outcome(submission, answer, outputs)


_NO_USER = SimpleNamespace(user=None)


def _header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


def _client(scope: dict, headers: dict[bytes, bytes]) -> SimpleNamespace:
    """What `throttles.client_address` reads of a request: its peer and X-Forwarded-For."""
    meta = {"REMOTE_ADDR": (scope.get("client") or ("",))[0]}
    forwarded = _header(headers, b"x-forwarded-for")
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return SimpleNamespace(META=meta)


def _error_answer(path: str, exc: Exception) -> Answer:
    if isinstance(exc, V2Error):
        response = v2_error(str(exc), exc.status, exc.headers)
    else:
        response = _errors.process_exception(SimpleNamespace(path=path), exc)
        if response is None:
            logger.exception("inference failed", exc_info=exc)
            response = v2_error("Server error.", 500)
    headers = {name: value for name, value in response.items() if name.lower() != "content-type"}
    return Answer(
        response.content, content_type=response["Content-Type"], headers=headers, status=response.status_code
    )


def _response_headers(
    answer: Answer, record: RequestRecord, limits: dict[str, str], secure: bool
) -> list[tuple[bytes, bytes]]:
    headers = [
        (b"content-type", answer.content_type.encode("latin-1")),
        (b"content-length", str(len(answer.body)).encode()),
    ]
    for name, value in {**limits, **answer.headers}.items():
        headers.append((name.lower().encode("latin-1"), str(value).encode("latin-1")))
    headers.extend(security_headers(secure))
    headers.append((REQUEST_ID_HEADER.lower().encode(), record.id.encode("latin-1")))
    return headers
