"""Every `/v2` error is `{"error": …}` (the Open Inference Protocol's form), formatted here and nowhere else.

Views raise or return errors; this middleware shapes those that come from outside them: quota refusals, bodies
over the limit, a dependency that is down (503 + Retry-After, see portal.outages), addresses that match no
route and Django's own 405s and 500s.
"""

from __future__ import annotations

from django.http import JsonResponse

from portal.middleware import ApiBodyLimitMiddleware
from portal.outages import Outage, log_outage, outage_of
from portal.quotas import QuotaExceeded, QuotaUnavailable

V2_PREFIX = "/v2"  # tritonclient asks for /v2 exactly as well as for /v2/…

GENERIC_MESSAGES = {404: "Not found.", 405: "Method not allowed.", 500: "Server error."}


def v2_error(message: str, status: int, headers: dict | None = None) -> JsonResponse:
    return JsonResponse({"error": message}, status=status, headers=headers)


def outage_error(outage: Outage) -> JsonResponse:
    response = JsonResponse(outage.body("error"), status=503, headers=outage.headers)
    response.outage = outage
    return response


class V2ErrorMiddleware(ApiBodyLimitMiddleware):
    path_prefix = V2_PREFIX

    def error_response(self, message: str, status: int, headers: dict | None = None) -> JsonResponse:
        return v2_error(message, status, headers)

    def __call__(self, request):
        response = super().__call__(request)
        outage = getattr(response, "outage", None)
        if self.applies_to(request) and outage is not None and not is_json(response):
            # The 500 handler's page for an error raised in middleware while a dependency is down.
            return outage_error(outage)
        if self.applies_to(request) and response.status_code >= 400 and not is_json(response):
            message = GENERIC_MESSAGES.get(response.status_code, response.reason_phrase + ".")
            kept = {name: response[name] for name in ("Allow", "Retry-After") if response.has_header(name)}
            return v2_error(message, response.status_code, kept)
        return response

    def process_exception(self, request, exception):
        if not self.applies_to(request):
            return None
        outage = outage_of(exception)
        if outage is not None:
            log_outage(outage, exception, request.path)
            return outage_error(outage)
        if isinstance(exception, QuotaUnavailable):
            return v2_error(str(exception.detail), 503, {"Retry-After": str(exception.wait)})
        if isinstance(exception, QuotaExceeded):
            body = {
                "error": exception.message,
                "limit": exception.limit_name,
                "retry_after": exception.retry_after,
            }
            return JsonResponse(body, status=429, headers=exception.headers)
        return super().process_exception(request, exception)


def is_json(response) -> bool:
    return response.get("Content-Type", "").startswith("application/json")
