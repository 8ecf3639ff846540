"""API middleware: `RateLimit-*` headers on every API response, 429s for quota errors raised outside DRF
(`/v2/`), and JSON 413s for request bodies over the limit."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import JsonResponse

from .quotas import (
    QuotaExceeded,
    QuotaUnavailable,
    RequestQuotaState,
    current_minute_headers,
    current_request_state,
)

logger = logging.getLogger(__name__)

API_PREFIXES = ("/api/v1/", "/v2/", "/v2")


class RateLimitHeadersMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(API_PREFIXES):
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

    def process_exception(self, request, exception):
        if isinstance(exception, QuotaUnavailable):
            return JsonResponse({"error": str(exception.detail)}, status=503, headers={"Retry-After": "5"})
        if isinstance(exception, QuotaExceeded):
            return JsonResponse(
                {
                    "error": exception.message,
                    "limit": exception.limit_name,
                    "retry_after": exception.retry_after,
                },
                status=429,
                headers=exception.headers,
            )
        return None

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
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path.startswith(API_PREFIXES) and not request.content_type.startswith("multipart/"):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if limit is not None and length > limit:
                return self.too_large(request, limit)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if isinstance(exception, RequestDataTooBig) and request.path.startswith(API_PREFIXES):
            return self.too_large(request, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return None

    @staticmethod
    def too_large(request, limit: int) -> JsonResponse:
        message = f"The request body is over the limit of {limit} bytes."
        key = "error" if request.path.startswith("/v2") else "detail"
        return JsonResponse({key: message}, status=413)
