"""API middleware: `RateLimit-*` headers on every API response, JSON 413s for request bodies over the
limit on `/api/v1/`, 503s for a dependency that is down (JSON on `/api/`, a page elsewhere), and the anonymous
user of a program's API request (`portal.wsgi`).
An app serving another API (`/v2`) subclasses these with its own error format."""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import RequestDataTooBig
from django.http import HttpResponse, JsonResponse
from django.template.loader import render_to_string

from .outages import Outage, log_outage, outage_of
from .quotas import RequestQuotaState, current_minute_headers, current_request_state

logger = logging.getLogger(__name__)


def declared_body_length(request) -> int:
    """The request's declared Content-Length; 0 when there is none or it is not a number."""
    try:
        return max(0, int(request.META.get("CONTENT_LENGTH") or 0))
    except ValueError:
        return 0


class RateLimitHeadersMiddleware:
    """`RateLimit-*` headers on every response under `settings.API_PATH_PREFIXES`.

    Quota errors raised outside DRF are the serving API's to format (see `inference.protocols.oip_errors`);
    the headers of a rejection are added here all the same.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(tuple(settings.API_PATH_PREFIXES)):
            return self.get_response(request)
        token = current_request_state.set(RequestQuotaState())
        try:
            response = self.get_response(request)
            state = current_request_state.get()
            headers = self.headers_for(request, state)
        finally:
            current_request_state.reset(token)
        for name, value in headers.items():
            response.setdefault(name, value)
        return response

    def headers_for(self, request, state: RequestQuotaState) -> dict[str, str]:
        if state.rejection is not None:
            return state.rejection.headers
        if state.admission is not None:
            return state.admission.headers
        user = state.api_key.user if state.api_key is not None else getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return {}
        try:
            return current_minute_headers(user)
        except Exception:
            # Headers are advice; a counter store hiccup must not turn a served answer into an error.
            logger.warning("could not read the rate-limit window for user %s", user.pk, exc_info=True)
            return {}


class ApiBodyLimitMiddleware:
    """`413` in JSON for an API request body over `DATA_UPLOAD_MAX_MEMORY_SIZE`, before any of it is read.

    Django's own check raises RequestDataTooBig while the body is parsed, which it answers with an HTML 400.
    Multipart uploads are exempt: their files stream to disk under the upload limit (the marketplace's 413).
    Subclasses serve another API by setting `path_prefix` and overriding `error_response`.
    """

    path_prefix = "/api/v1/"

    def __init__(self, get_response):
        self.get_response = get_response

    def applies_to(self, request) -> bool:
        return request.path.startswith(self.path_prefix)

    def error_response(self, message: str, status: int, headers: dict | None = None) -> JsonResponse:
        return JsonResponse({"detail": message}, status=status, headers=headers)

    def __call__(self, request):
        if self.applies_to(request) and not request.content_type.startswith("multipart/"):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            if limit is not None and declared_body_length(request) > limit:
                return self.too_large(limit)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDataTooBig) and self.applies_to(request):
            return self.too_large(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return None

    def too_large(self, limit: int) -> JsonResponse:
        return self.error_response(f"The request body is over the limit of {limit} bytes.", 413)


def outage_response(request, outage: Outage) -> HttpResponse:
    """A 503 with `Retry-After`: `{"detail", "unavailable"}` on /api/, the "temporarily unavailable" page
    elsewhere. /v2 turns the page into its own `{"error"}` form (inference.protocols.oip_errors reads
    `outage`)."""
    if request.path.startswith("/api/"):
        response = JsonResponse(outage.body("detail"), status=503, headers=outage.headers)
    else:
        # Rendered without the request: context processors would reach for the session and the user, which
        # may live in the very store that is down.
        page = render_to_string("503.html", {"outage": outage})
        response = HttpResponse(page, status=503, headers=outage.headers)
    response.outage = outage
    return response


class DependencyOutageMiddleware:
    """A view that failed because PostgreSQL, Redis or the task queue is out of reach answers 503, not 500.

    DRF views answer through `portal.outages.api_exception_handler` before this is reached; /v2 has its own
    (`inference.protocols.oip_errors.V2ErrorMiddleware`). Errors raised inside other middleware are caught by
    the 500 handler (`portal.views.server_error`), which asks `outage_of` the same question.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        outage = outage_of(exception)
        if outage is None or request.path.startswith(tuple(settings.OUTAGE_SELF_FORMATTED_PREFIXES)):
            return None
        log_outage(outage, exception, request.path)
        return outage_response(request, outage)


class AnonymousUserMiddleware:
    """`request.user` for a program's API request (`settings.API_MIDDLEWARE`): anonymous, with no session to
    read; the API's key authentication sets the key's user."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.user = AnonymousUser()
        return self.get_response(request)
