"""Counting abuse per client: who the client is, and counters for events that must stay rare
(invalid bearer keys, sign-ups, password-reset mails): at most so many in a window that opens at the
client's first one.

The counters live in Django's cache: Redis when REDIS_URL is set (the same server as the quotas, shared by
every process), process memory otherwise. Only the events themselves are counted, so a request that does
none of these things (a valid key, a page view) never touches a counter.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django.utils import timezone

logger = logging.getLogger(__name__)

# The request being served, for code handed only a header (bearer keys on /v2) that must know the client.
current_request: ContextVar[HttpRequest | None] = ContextVar("current_request", default=None)


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = current_request.set(request)
        try:
            return self.get_response(request)
        finally:
            current_request.reset(token)


def client_address(request: HttpRequest) -> str | None:
    """The client's IP address: REMOTE_ADDR, or, behind TRUSTED_PROXY_COUNT proxies, the address the outermost
    trusted proxy saw (X-Forwarded-For is appended to by each proxy; entries further left are the client's
    word and can be forged)."""
    remote = request.META.get("REMOTE_ADDR") or None  # None: no network request (a test, a login by code)
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
    forwarded = [part for part in forwarded if part]
    if len(forwarded) < proxies:
        return remote
    return forwarded[-proxies]


@dataclass(frozen=True)
class Refusal:
    """An event over its limit: refused until `until` (the end of the counting window)."""

    until: datetime
    retry_after: int


def count_event(scope: str, client: str, *, limit: int, window: int) -> Refusal | None:
    """Count one event of `scope` by `client` in a window of `window` seconds that starts at the client's
    first event. Returns a Refusal when the event is over `limit` in that window, else None."""
    now = time.time()
    digest = hashlib.sha256(client.encode()).hexdigest()[:32]
    base = f"portal:throttle:{scope}:{digest}"
    try:
        # Every process agrees on the window's start: get_or_set() adds it once, then reads what was added.
        window_start = float(cache.get_or_set(f"{base}:start", now, window))
        key = f"{base}:{window_start:.3f}"
        cache.add(key, 0, window + 5)
        try:
            count = cache.incr(key)
        except ValueError:  # the window's counter expired between add() and incr()
            cache.set(key, 1, window + 5)
            count = 1
    except Exception:
        # A counter that cannot be reached refuses nothing: the request goes on to its ordinary answer.
        logger.warning("could not count a %s event", scope, exc_info=True)
        return None
    if count <= limit:
        return None
    retry_after = max(1, math.ceil(window_start + window - now))
    return Refusal(until=timezone.now() + timedelta(seconds=retry_after), retry_after=retry_after)


def count_request(request: HttpRequest, scope: str, *, limit: int, window: int) -> Refusal | None:
    return count_event(scope, client_address(request) or "unknown", limit=limit, window=window)


def login_locked_until(request: HttpRequest, credentials: dict | None) -> tuple[datetime, int]:
    """When django-axes lifts the lock-out of this login's username for this client, and the seconds until
    then: the cool-off time after the last failure it counted."""
    from axes.helpers import get_client_username, get_cool_off
    from axes.models import AccessAttempt

    now = timezone.now()
    last_failure = (
        AccessAttempt.objects.filter(
            username=get_client_username(request, credentials), ip_address=client_address(request)
        )
        .order_by("-attempt_time")
        .values_list("attempt_time", flat=True)
        .first()
    )
    until = (last_failure or now) + get_cool_off(request)
    return until, max(1, int((until - now).total_seconds() + 0.999))
