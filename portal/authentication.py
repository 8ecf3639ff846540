"""Bearer API keys for `/api/v1/` and `/v2/`, and the scope check that goes with them."""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from . import metrics, process_cache
from .models import ApiKey
from .outages import outage_of
from .quotas import QuotaExceeded
from .throttles import client_address, count_event, current_request

LAST_USED_RESOLUTION = timedelta(minutes=1)

KEY_FIELDS = [f.attname for f in ApiKey._meta.concrete_fields]
# Everything the request path needs about the owner; the password hash stays out of the cache.
USER_FIELDS = [f.attname for f in get_user_model()._meta.concrete_fields if f.attname != "password"]


def key_cache_key(prefix: str) -> str:
    return f"portal:key:{prefix}"


def invalidate_keys(prefixes) -> None:
    """Forget cached keys everywhere, now and at commit (see `process_cache.forget`)."""
    process_cache.forget([key_cache_key(prefix) for prefix in prefixes])


def _load_key(prefix: str) -> ApiKey | None:
    """The key and its owner, from the caches (plain values, no pickled models) or one query."""

    def load() -> dict | None:
        key = ApiKey.objects.select_related("user").filter(prefix=prefix).first()
        if key is None:
            return None
        return {
            "key": [getattr(key, name) for name in KEY_FIELDS],
            "user": [getattr(key.user, name) for name in USER_FIELDS],
        }

    entry = process_cache.cached(key_cache_key(prefix), load, settings.ACCESS_CACHE_SECONDS)
    if entry is None:
        return None
    key = ApiKey.from_db("default", KEY_FIELDS, _from_json(ApiKey, KEY_FIELDS, entry["key"]))
    user_model = get_user_model()
    key.user = user_model.from_db("default", USER_FIELDS, _from_json(user_model, USER_FIELDS, entry["user"]))
    return key


def _from_json(model, names: list[str], values: list) -> list:
    # The shared cache holds JSON: datetimes come back from it as ISO strings.
    return [model._meta.get_field(name).to_python(value) for name, value in zip(names, values, strict=True)]


_last_touched: dict[int, float] = {}


def forget_recent_uses() -> None:
    """Forget which keys this process saw used within the minute (tests that move the clock)."""
    _last_touched.clear()


def touch_last_used(key: ApiKey) -> None:
    """Record use at most once a minute per key: this process's clock first, then a shared cache flag, then
    one conditional UPDATE (so a busy key costs no round trip per request)."""
    resolution = LAST_USED_RESOLUTION.total_seconds()
    now_monotonic = time.monotonic()
    if now_monotonic - _last_touched.get(key.pk, -resolution) < resolution:
        return
    _last_touched[key.pk] = now_monotonic
    try:
        if not cache.add(f"portal:key-used:{key.pk}", 1, int(resolution)):
            return
    except Exception as exc:
        if outage_of(exc) is None:
            raise  # Redis down: this process's clock alone spares the database

    now = timezone.now()
    ApiKey.objects.filter(pk=key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)


class TooManyInvalidKeys(QuotaExceeded):
    """`429` for a client that keeps sending keys that do not exist. A QuotaExceeded, so every protocol
    answers it as it answers a rate limit (`Retry-After`, the body naming the limit)."""

    def __init__(self, *, limit: int, window: int, retry_after: int):
        self.limit_name = "invalid_api_keys"
        metrics.quota_refusals_total.labels(self.limit_name).inc()
        self.limit = limit
        self.retry_after = self.wait = retry_after
        self.windows = []
        self.message = (
            f"Too many invalid API keys from your address ({limit} in {window} s). "
            f"Try again in {retry_after} s; a valid key is always accepted."
        )
        exceptions.APIException.__init__(self, self.message, self.default_code)
        # Set after __init__, which would turn every value into a string: retry_after stays a number.
        self.detail = {"detail": self.detail, "limit": self.limit_name, "retry_after": retry_after}

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


def refuse_invalid_key(client: str | None) -> None:
    """Count an invalid key against its client; raise 429 once the client is over the limit, else 401.

    Only this failure path counts: a valid key costs nothing here, and is accepted whatever its address sent
    before (many users share one address behind NAT)."""
    if client is None:
        request = current_request.get()
        client = client_address(request) if request is not None else None
    if client is not None:
        limit, window = settings.API_KEY_FAILURE_LIMIT, settings.API_KEY_FAILURE_WINDOW
        refusal = count_event("invalid-api-key", client, limit=limit, window=window)
        if refusal is not None:
            raise TooManyInvalidKeys(limit=limit, window=window, retry_after=refusal.retry_after)
    raise exceptions.AuthenticationFailed("Invalid API key.")


@sensitive_variables("header", "parts", "raw_key")
def authenticate_bearer(header: str, *, client: str | None = None) -> ApiKey:
    """Find the active key named by an `Authorization: Bearer …` header, or raise AuthenticationFailed (or
    TooManyInvalidKeys). `client` is the caller's address; by default the current request's."""
    parts = header.split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise exceptions.AuthenticationFailed("Malformed Authorization header: expected 'Bearer <api key>'.")
    raw_key = parts[1]
    prefix = ApiKey.prefix_of(raw_key)
    if prefix is None:
        raise exceptions.AuthenticationFailed("Malformed API key.")
    key = _load_key(prefix)
    if key is None or not key.matches(raw_key):
        refuse_invalid_key(client)
    if key.revoked_at is not None:
        raise exceptions.AuthenticationFailed("This API key was revoked.")
    if not key.is_active():
        raise exceptions.AuthenticationFailed("This API key has expired.")
    if not key.user.is_active:
        raise exceptions.AuthenticationFailed("This account is disabled.")
    touch_last_used(key)
    from .quotas import current_request_state

    state = current_request_state.get()
    if state is not None:
        state.api_key = key
    return key


# The 401 of a call that sent no credentials says how to send a key and where to make one (DRF's own words,
# "Authentication credentials were not provided.", say neither). DRF raises NotAuthenticated itself, with no
# hook to word it per view: its default is the one place.
exceptions.NotAuthenticated.default_detail = (
    "No API key was sent. Send one as the header `Authorization: Bearer <key>`; "
    "make a key on /settings/keys/ (or with `make createapikey USER=<you>` in development)."
)


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


class SessionOnly(permissions.BasePermission):
    """Key management needs a logged-in session: a leaked key must not be able to mint or revoke keys."""

    message = (
        "API keys can be managed only from a logged-in session (the /settings/keys/ page), not with a key."
    )

    def has_permission(self, request, view) -> bool:
        return not isinstance(request.auth, ApiKey)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes bearer keys in the OpenAPI document."""

    target_class = "portal.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from /settings/keys/: `Authorization: Bearer mp_…`.",
        }
