"""Bearer keys on the prediction hot path, remembered for a few seconds so a request costs no key query.

A revoked or expired key stops working within `INFERENCE_LOOKUP_CACHE_SECONDS`.
"""

from __future__ import annotations

import hashlib
import threading
import time

from django.conf import settings

from portal.authentication import ApiKeyAuthentication, authenticate_bearer
from portal.models import ApiKey

_keys: dict[str, tuple[float, ApiKey]] = {}
_lock = threading.Lock()


def bearer_key_cached(header: str) -> ApiKey:
    """`authenticate_bearer`, cached by the header's hash; raises AuthenticationFailed like it."""
    digest = hashlib.sha256(header.encode()).hexdigest()
    now = time.monotonic()
    cached = _keys.get(digest)
    if cached is not None and cached[0] > now and cached[1].is_active():
        return cached[1]
    key = authenticate_bearer(header)
    with _lock:
        if len(_keys) > 10_000:
            _keys.clear()
        _keys[digest] = (now + settings.INFERENCE_LOOKUP_CACHE_SECONDS, key)
    return key


class CachedApiKeyAuthentication(ApiKeyAuthentication):
    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        key = bearer_key_cached(header)
        return key.user, key
