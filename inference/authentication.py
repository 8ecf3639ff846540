"""Bearer keys on the prediction hot path: `portal.authentication.authenticate_bearer` caches them
(no key query per request) and forgets a key the moment it is revoked."""

from __future__ import annotations

from portal.authentication import ApiKeyAuthentication, authenticate_bearer
from portal.models import ApiKey


def bearer_key_cached(header: str) -> ApiKey:
    """`authenticate_bearer`, which caches keys itself (in Redis when configured) and drops a key from its
    cache when it is revoked, so revocation applies to the very next request."""
    return authenticate_bearer(header)


class CachedApiKeyAuthentication(ApiKeyAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        key = bearer_key_cached(header)
        return key.user, key
