"""`RateLimit-*` headers on every API response, and 429s for quota errors raised outside DRF (`/v2/`)."""

from __future__ import annotations

import logging

from django.http import JsonResponse

from .quotas import QuotaExceeded, RequestQuotaState, current_minute_headers, current_request_state

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
