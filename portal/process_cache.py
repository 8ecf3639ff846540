"""Small, hot, rarely changing entries (API keys, users' limits) kept in each process before the shared cache.

Every request needs its key and its owner's limits; fetching them from Redis cost two round trips a request.
Each process now keeps its own copy, and every change goes through `forget()`: it deletes the shared entries
and, at commit, publishes their names on a Redis channel that every process listens to, so a revoked key or a
changed plan is dropped everywhere within milliseconds. A process serves its copies only while subscribed:
when the subscription breaks, it drops them all and reads through to the shared cache until it is
back. Without Redis there is no shared cache to notify through, so copies are not kept at all.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)

CHANNEL = "portal:forget"


class _Copies:
    def __init__(self):
        self.entries: dict[str, tuple[float, object]] = {}
        self.lock = threading.Lock()
        self.live = threading.Event()  # subscribed: copies may be served
        self.pid: int | None = None

    def start(self) -> None:
        """Listen for changes in this process (once per process: a fork gets its own listener)."""
        if self.pid == os.getpid():
            return
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
            self.entries.clear()
            self.live = threading.Event()
            threading.Thread(target=self._listen, name="process-cache", daemon=True).start()

    def _listen(self) -> None:
        from django_redis import get_redis_connection

        while True:
            pubsub = None
            try:
                pubsub = get_redis_connection("default").pubsub(ignore_subscribe_messages=False)
                pubsub.subscribe(CHANNEL)
                for message in pubsub.listen():
                    if message["type"] == "subscribe":
                        self.live.set()
                    elif message["type"] == "message":
                        self.drop(message["data"].decode().split("\n"))
            except Exception as exc:
                logger.warning("process cache: subscription lost (%s); serving no copies", type(exc).__name__)
            finally:
                self.live.clear()
                with self.lock:
                    self.entries.clear()
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: S110 (already broken)
                        pass
            time.sleep(1)

    def get(self, key: str):
        if not self.live.is_set():
            return None
        entry = self.entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key: str, value, seconds: float) -> None:
        if self.live.is_set():
            with self.lock:
                self.entries[key] = (time.monotonic() + seconds, value)

    def drop(self, keys) -> None:
        with self.lock:
            for key in keys:
                self.entries.pop(key, None)


_copies = _Copies()


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def cached(key: str, load, seconds: float):
    """The entry named `key`: this process's copy, else the shared cache's, else `load()` (None: not kept)."""
    if enabled():
        _copies.start()
        value = _copies.get(key)
        if value is not None:
            return value
    value = cache.get(key)
    if value is None:
        value = load()
        if value is None:
            return None
        cache.set(key, value, seconds)
    if enabled():
        _copies.put(key, value, seconds)
    return value


def forget(keys: list[str]) -> None:
    """Drop entries everywhere now and again at commit, so no request re-caches the old values in between."""
    if not keys:
        return

    def drop() -> None:
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
