"""Bearer API keys for `/api/v1/` and `/v2/`, and the scope check that goes with them."""

from __future__ import annotations

from rest_framework import authentication, exceptions, permissions

from .models import ApiKey


def authenticate_bearer(header: str) -> ApiKey:
    """Find the active key named by an `Authorization: Bearer …` header, or raise AuthenticationFailed."""
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Bearer <api key>'.")
    raw_key = parts[1]
    prefix = ApiKey.prefix_of(raw_key)
    if prefix is None:
        raise exceptions.AuthenticationFailed("Malformed API key.")
    key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
    if key is None or not key.matches(raw_key):
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if key.revoked_at is not None:
        raise exceptions.AuthenticationFailed("This API key was revoked.")
    if not key.is_active():
        raise exceptions.AuthenticationFailed("This API key has expired.")
    if not key.user.is_active:
        raise exceptions.AuthenticationFailed("This account is disabled.")
    return key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        key = authenticate_bearer(header)
        return key.user, key

    def authenticate_header(self, request) -> str:
        # Makes DRF answer 401 (not 403) to unauthenticated calls.
        return 'Bearer realm="api"'


class HasScope(permissions.BasePermission):
    """Views set `required_scope`; session users hold every scope, key users only what the key grants."""

    message = "This API key lacks the scope this endpoint needs."

    def has_permission(self, request, view) -> bool:
        scope = getattr(view, "required_scope", None)
        if scope is None or not isinstance(request.auth, ApiKey):
            return True
        if request.auth.has_scope(scope):
            return True
        self.message = f"This API key lacks the '{scope}' scope."
        return False
