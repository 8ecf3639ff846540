"""What every prediction path of the data plane does around its protocol's own steps, in place of the
middleware a Django view's answer passes through: the request's id and log line, the body limit,
`RateLimit-*`, the security headers; and the threads in which the steps that may touch the database run (a
cache miss queries it, which Django refuses from the event loop).

`oip.py` (`/v2/…/infer`) and `rest.py` (`/api/v1/…/predict`) are the endpoints built on it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
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

from ..protocols.oip import Answer
from .bridge import read_whole_body

_rate_limit_headers = RateLimitHeadersMiddleware(get_response=None)
_NO_USER = SimpleNamespace(user=None)


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
    """The headers Django's security middleware gives a JSON API's answer, found once by running it on one
    (`/v2` and `/api/v1/` get the same: `portal.security.JSON_API_PREFIXES`)."""
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


def answers_here(scope: dict, headers: dict[bytes, bytes]) -> bool:
    """Whether an endpoint answers the request; one the site must redirect to HTTPS goes to Django."""
    return not settings.SECURE_SSL_REDIRECT or is_secure(scope, headers)


def header(headers: dict[bytes, bytes], name: bytes) -> str | None:
    value = headers.get(name)
    return value.decode("latin-1") if value is not None else None


def client_of(scope: dict, headers: dict[bytes, bytes]) -> SimpleNamespace:
    """What `throttles.client_address` reads of a request: its peer and X-Forwarded-For."""
    meta = {"REMOTE_ADDR": (scope.get("client") or ("",))[0]}
    forwarded = header(headers, b"x-forwarded-for")
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return SimpleNamespace(META=meta)


def database_request_ended() -> None:
    """What Django does as each request ends (its signals do not run here): a connection that broke or
    outlived CONN_MAX_AGE is closed, and opened anew (health-checked) when next needed."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.connection is not None:
        connection.close_if_unusable_or_obsolete()


class Exchange:
    """One request on its way through an endpoint: its log record, what admission learned, its context."""

    def __init__(self, endpoint: Endpoint, scope: dict, headers: dict[bytes, bytes]):
        self.endpoint, self.scope, self.headers = endpoint, scope, headers
        self.record = RequestRecord(id=request_id_from(header(headers, b"x-request-id")))
        self.state = RequestQuotaState()
        self.user = None  # the caller, once known, for the log line
        self.context = contextvars.copy_context()
        self.context.run(current_request.set, self.record)
        self.context.run(current_request_state.set, self.state)
        self.context.run(throttles.current_request.set, client_of(scope, headers))

    def in_thread(self, function, *args):
        """Run `function(*args)` in the endpoint's threads, in this request's context."""
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(self.endpoint.threads, self.context.run, function, *args)

    def run(self, function, *args):
        """Run `function(*args)` here, in this request's context."""
        return self.context.run(function, *args)


class Endpoint:
    protocol = ""  # the request log's and metrics' name of the protocol

    def __init__(self, threads: Executor, body_limit: int):
        self.threads = threads
        self.body_limit = body_limit

    async def answer(self, exchange: Exchange, route, body: bytes) -> Answer:
        raise NotImplementedError

    def too_large(self) -> Answer:
        raise NotImplementedError

    async def __call__(self, scope: dict, receive, send, route, headers: dict[bytes, bytes]) -> None:
        exchange = Exchange(self, scope, headers)
        body, gone = await read_whole_body(receive, self.body_limit)
        if gone:
            return
        answer = self.too_large() if len(body) > self.body_limit else await self.answer(exchange, route, body)
        state = exchange.state
        if state.admission is not None or state.rejection is not None or state.api_key is None:
            limits = _rate_limit_headers.headers_for(_NO_USER, state)
        else:  # refused after the key was read: the window's headers are read from Redis
            limits = await exchange.in_thread(_rate_limit_headers.headers_for, _NO_USER, state)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": _response_headers(answer, exchange.record, limits, is_secure(scope, headers)),
            }
        )
        await send({"type": "http.response.body", "body": answer.body, "more_body": False})
        extra = {"method": "POST", "path": scope["path"]}
        key = state.api_key
        prefix = key.prefix if key is not None else key_prefix_of(header(headers, b"authorization") or "")
        if prefix:
            extra["key_prefix"] = prefix
        if exchange.user is not None:
            extra["user"] = exchange.user.pk
        finished = functools.partial(request_finished, record=exchange.record, protocol=self.protocol)
        exchange.run(functools.partial(finished, status=answer.status, extra=extra))


def answer_of(response: HttpResponse) -> Answer:
    """A Django response as an endpoint's answer."""
    own = ("content-type", "content-length")  # the endpoint's own
    headers = {name: value for name, value in response.items() if name.lower() not in own}
    return Answer(
        response.content,
        content_type=response["Content-Type"],
        headers=headers,
        status=response.status_code,
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
