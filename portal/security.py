"""Web-security plumbing around the libraries: the Content-Security-Policy middleware and the login-throttle
authentication backend.

django-csp builds its header anew for every response (about 45 µs); the APIs answer JSON that no browser
renders as a page, so they get the strictest policy as a constant string instead, at no cost to the hot path.
"""

from __future__ import annotations

from axes.backends import AxesStandaloneBackend
from csp.middleware import CSPMiddleware

JSON_API_PREFIXES = ("/api/v1/", "/v2")
JSON_API_POLICY = "default-src 'none'; frame-ancestors 'none'"


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    def __call__(self, request):
        if request.path_info.startswith(JSON_API_PREFIXES):
            response = self.get_response(request)
            response.setdefault("Content-Security-Policy", JSON_API_POLICY)
            return response
        return super().__call__(request)


class LoginThrottleBackend(AxesStandaloneBackend):
    """django-axes' lock-out check for every login from a request (the login pages, the admin's).

    Without a request (code, a shell, the test client's login()) there is no client to count, and axes would
    raise; such a call goes on to the password check unthrottled."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)
