"""The direct way from a web process to the runner pool of a supervisor on the same host.

A supervisor listens on a Unix socket in this deployment's link folder (`link_dir()`); a web process (the data
plane, gunicorn) keeps one connection to each supervisor it finds there and sends each interactive call on it
as one frame (`protocol.py`: the request header and its tensors), answered out of order by id. No Redis on
the way: the call goes into the pool's scheduler as a job's does, and its answer comes back on the same
connection, after its record is queued for the recorder. A call for a pool no local supervisor serves still
goes through the Redis request queue (`scheduling/queue.py`), where a supervisor on another host takes it.

A supervisor's hello names the pools it serves. A connection that breaks fails the calls it carries
(`LinkLost`): their callers get a 503 and record them, unless the supervisor already did (same id, written
once).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import struct
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
from django.conf import settings

from ..codec import pack_tensors, unpack_tensors
from ..scheduling.pools import default_pool
from .protocol import ChannelClosed, receive_message

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct("<Q")
HELLO_TIMEOUT_SECONDS = 2.0
# How often a web process looks for supervisors again when a call's pool has none linked.
RESCAN_SECONDS = 1.0
# The status of a call refused because its model has INFERENCE_MODEL_QUEUE_MAX calls waiting already.
BUSY = "busy"


class LinkLost(ConnectionError):
    """The supervisor's connection broke before the call's answer came."""


def link_dir() -> Path:
    """The link folder of this deployment's request queue (its data folder, Redis and key prefix): a web
    process finds there the supervisors that serve its own queue, never another deployment's on the same
    machine (a test run beside `make run`, two stacks on one Redis)."""
    return _link_dir(str(settings.DATA_DIR), settings.REDIS_URL, settings.INFERENCE_REDIS_PREFIX)


@functools.lru_cache(maxsize=16)
def _link_dir(data_dir: str, redis_url: str, prefix: str) -> Path:
    identity = "\n".join([str(Path(data_dir).resolve()), redis_url, prefix])
    deployment = hashlib.sha256(identity.encode()).hexdigest()[:16]  # short: socket paths hold 108 bytes
    return Path(tempfile.gettempdir()) / f"modelport-link-{os.geteuid()}-{deployment}"


def send_frame(sock: socket.socket, header: dict, tensors: dict[str, np.ndarray] | None = None) -> None:
    message = pack_tensors(header, tensors or {})
    sock.sendall(_LENGTH.pack(len(message)) + message)


def receive_frame(sock: socket.socket) -> tuple[dict, dict[str, np.ndarray]]:
    return unpack_tensors(receive_message(sock))


# --- the web's side -----------------------------------------------------------------------------------------


class SupervisorLink:
    """One connection to a supervisor: calls go out under a lock, a reader thread completes their futures."""

    def __init__(self, path: str):
        self.path = path
        self.folder = os.path.dirname(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(HELLO_TIMEOUT_SECONDS)
        try:
            self.sock.connect(path)
            hello, _ = receive_frame(self.sock)
        except BaseException:
            self.sock.close()
            raise
        self.sock.settimeout(None)
        self.supervisor: str = hello.get("name", "")
        self.pools: frozenset[str] = frozenset(hello.get("pools", []))
        # The default pool may be named differently here and there (`pools.default_pool`): the hello says.
        self.serves_default: bool = bool(hello.get("default"))
        self.pending: dict[str, Future] = {}
        self.lock = threading.Lock()
        self.alive = True
        threading.Thread(target=self._read_replies, name="supervisor-link", daemon=True).start()

    def submit(self, header: dict, tensors: dict[str, np.ndarray]) -> Future:
        """Send one call; its future gives (reply header, outputs), or raises LinkLost."""
        future: Future = Future()
        with self.lock:
            if not self.alive:
                raise LinkLost("the runner pool's connection is closed")
            self.pending[header["id"]] = future
            try:
                send_frame(self.sock, header, tensors)
            except OSError as exc:
                self.pending.pop(header["id"], None)
                self._close()
                raise LinkLost("the runner pool's connection broke") from exc
        return future

    def forget(self, call_id: str) -> None:
        """The caller stopped waiting: its answer, if it comes, is dropped (the supervisor records it)."""
        with self.lock:
            self.pending.pop(call_id, None)

    def cancel(self, call_id: str) -> None:
        """The caller is gone: a call no runner has taken yet is dropped from the queue, not run; one that is
        running finishes. Its answer, if it comes, is dropped."""
        with self.lock:
            self.pending.pop(call_id, None)
            if not self.alive:
                return
            try:
                send_frame(self.sock, {"id": call_id, "cancel": True})
            except OSError:
                self._close()

    def _read_replies(self) -> None:
        try:
            while True:
                reply, outputs = receive_frame(self.sock)
                with self.lock:
                    future = self.pending.pop(reply.get("id", ""), None)
                if future is not None and future.set_running_or_notify_cancel():
                    future.set_result((reply, outputs))
        except (ChannelClosed, OSError, ValueError) as exc:
            if not isinstance(exc, ChannelClosed):
                logger.warning("the link to supervisor %s broke: %s", self.supervisor, exc)
        finally:
            with self.lock:
                self._close()
                orphans, self.pending = list(self.pending.values()), {}
            for future in orphans:
                if future.set_running_or_notify_cancel():
                    future.set_exception(LinkLost("The worker's runner pool went away; retry."))

    def _close(self) -> None:
        self.alive = False
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Links:
    """This process's links, found in `link_dir()`; looked for again at most every RESCAN_SECONDS."""

    def __init__(self):
        self.lock = threading.Lock()
        self.links: dict[str, SupervisorLink] = {}
        self.scanned = 0.0
        self.turn = 0
        self.pid = os.getpid()

    def for_pool(self, pool: str) -> SupervisorLink | None:
        """A live link to a supervisor serving `pool` (blank: the default pool), or None."""
        if self.pid != os.getpid():  # a forked child does not share its parent's connections
            self.__init__()
        serving = self._serving(pool)
        if not serving and time.monotonic() - self.scanned >= RESCAN_SECONDS:
            self._scan()
            serving = self._serving(pool)
        if not serving:
            return None
        self.turn += 1
        return serving[self.turn % len(serving)]

    def _serving(self, pool: str) -> list[SupervisorLink]:
        default, folder = default_pool(pool), str(link_dir())
        return [
            link
            for link in list(self.links.values())
            if link.alive
            and link.folder == folder
            and (link.serves_default if default else pool in link.pools)
        ]

    def _scan(self) -> None:
        with self.lock:
            self.scanned = time.monotonic()
            for path, link in list(self.links.items()):
                if not link.alive:
                    del self.links[path]
            try:
                paths = [str(p) for p in link_dir().glob("*.sock")]
            except OSError:
                return
            for path in paths:
                if path in self.links:
                    continue
                try:
                    self.links[path] = SupervisorLink(path)
                except (OSError, ChannelClosed, ValueError):
                    continue  # a supervisor that ended without removing its socket, or one starting

    def close(self) -> None:
        with self.lock:
            for link in self.links.values():
                with link.lock:
                    link._close()
            self.links.clear()
            self.scanned = 0.0


_links = Links()


def link_for(pool: str) -> SupervisorLink | None:
    """The way to a runner pool on this host that serves `pool`, if there is one and links are on."""
    if not settings.INFERENCE_LINK:
        return None
    return _links.for_pool(pool)


def links_reset() -> None:
    """Close this process's links (tests that stop and start workers)."""
    _links.close()
