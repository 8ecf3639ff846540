"""Small, hot, rarely changing entries (API keys, users' limits) kept in each process before the shared cache.

Every request needs its key and its owner's limits; fetching them from Redis cost two round trips a request.
Each process now keeps its own copy, and every change goes through `forget()`: it deletes the shared entries
and, at commit, publishes their names on a Redis channel every process subscribes to, and each process reads
its subscription before every look-up, so a revoked key or a changed plan is gone on the next request. A
process serves copies only while subscribed: when the subscription breaks, it drops them all and reads
through to the shared cache until it is back. Without Redis there is no channel, so no copies are kept.

Other in-process caches (the version look-up of `inference.services`) hear the same changes through
`on_forget()`, and call `sync()` before they serve an entry.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

from .outages import outage_of

logger = logging.getLogger(__name__)

CHANNEL = "portal:forget"

# (prefix, callback): called with the forgotten keys that start with `prefix`, or with None when every entry
# must go (the subscription broke, so changes may have been missed).
_listeners: list[tuple[str, Callable[[list[str] | None], None]]] = []


def on_forget(prefix: str, callback: Callable[[list[str] | None], None]) -> None:
    """Have `callback` hear every forgotten key starting with `prefix`, in this process."""
    _listeners.append((prefix, callback))


def _tell_listeners(keys: list[str] | None) -> None:
    for prefix, callback in _listeners:
        if keys is None:
            callback(None)
        elif matching := [key for key in keys if key.startswith(prefix)]:
            callback(matching)


class _Copies:
    """This process's copies, and its subscription to the change channel.

    The subscription is read before every look-up (a non-blocking read of its socket, no round trip): Redis
    writes a change to every subscriber before `forget()`'s PUBLISH returns, so a request that starts after a
    change has committed never sees the old copy."""

    def __init__(self):
        self.entries: dict[str, tuple[float, object]] = {}
        self.lock = threading.Lock()
        self.pubsub = None
        self.pid: int | None = None
        self.retry_at = 0.0

    def _sync(self) -> bool:
        """Apply the changes published so far; False when copies may not be served (no live subscription)."""
        if self.pid != os.getpid():  # a forked child: its parent's subscription and copies are not its own
            self.pid, self.pubsub = os.getpid(), None
            self.entries.clear()
            _tell_listeners(None)
        try:
            if self.pubsub is None:
                if time.monotonic() < self.retry_at:
                    return False
                from django_redis import get_redis_connection

                pubsub = get_redis_connection("default").pubsub()
                pubsub.subscribe(CHANNEL)
                confirmed = pubsub.get_message(timeout=1)
                if not confirmed or confirmed["type"] != "subscribe":
                    raise ConnectionError("no subscription confirmed")
                self.pubsub = pubsub
            while (message := self.pubsub.get_message(timeout=0)) is not None:
                if message["type"] == "message":
                    keys = message["data"].decode().split("\n")
                    for key in keys:
                        self.entries.pop(key, None)
                    _tell_listeners(keys)
            return True
        except Exception as exc:
            logger.warning("process cache: no subscription (%s); serving no copies", type(exc).__name__)
            self.entries.clear()
            _tell_listeners(None)
            self.pubsub, self.retry_at = None, time.monotonic() + 1
            return False

    def sync(self) -> bool:
        with self.lock:
            return self._sync()

    def get(self, key: str):
        with self.lock:
            if not self._sync():
                return None
            entry = self.entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, value, seconds: float) -> None:
        with self.lock:
            if self.pubsub is not None and self.pid == os.getpid():
                self.entries[key] = (time.monotonic() + seconds, value)

    def drop(self, keys) -> None:
        with self.lock:
            for key in keys:
                self.entries.pop(key, None)


_copies = _Copies()


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def sync() -> bool:
    """Apply the changes published so far, in this process and its `on_forget` listeners. False when entries
    must not be served from memory (Redis is configured but the subscription is down). Without Redis: True,
    changes reach this process's listeners from its own `forget()` only."""
    if not enabled():
        return True
    return _copies.sync()


def cached(key: str, load, seconds: float):
    """The entry named `key`: this process's copy, else the shared cache's, else `load()` (None: not kept).
    With the shared cache down, `load()` every time."""
    if enabled():
        value = _copies.get(key)
        if value is not None:
            return value
    try:
        value = cache.get(key)
    except Exception as exc:
        if outage_of(exc) is None:
            raise
        # Redis is down: the database answers (while it is up), and nothing is kept until Redis is back.
        return load()
    if value is None:
        value = load()
        if value is None:
            return None
        try:
            cache.set(key, value, seconds)
        except Exception as exc:
            if outage_of(exc) is None:
                raise
            return value
    if enabled():
        _copies.put(key, value, seconds)
    return value


def forget(keys: list[str]) -> None:
    """Drop entries everywhere now and again at commit, so no request re-caches the old values in between."""
    if not keys:
        return

    def drop() -> None:
        _tell_listeners(keys)
        cache.delete_many(keys)
        if enabled():
            _copies.drop(keys)
            try:
                from django_redis import get_redis_connection

                get_redis_connection("default").publish(CHANNEL, "\n".join(keys))
            except Exception:
                logger.exception("process cache: could not publish a change")

    drop()
    transaction.on_commit(drop)


def clear_copies() -> None:
    """Drop this process's copies (tests that wipe the shared cache between cases)."""
    with _copies.lock:
        _copies.entries.clear()
