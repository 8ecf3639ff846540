"""The request queue between the web and the runner pools: the one owner of its Redis keys and wire format.

The web pushes a request (a typed `RequestHeader` and the tensors' bytes) onto its model's queue `q:<sha256>`,
pushes the sha256 onto its pool's `wake:<pool>` (`pools.py`), and waits on its own reply key `r:<id>`. The
supervisors of the workers serving that pool pop wake-ups, and their runners drain a model's queue only when
one of them is free for that model, so the queue stays visible (its depth is the backpressure) and shareable
between workers. Finished calls go onto the stream `records:stream`, which the recorders (a consumer group)
write to the database in bulk, acknowledging and deleting an entry only once it is committed.
`alive:<pool>` is the heartbeat of the pool's supervisors (`alive` of any): with none, the web does not wait
on the queue but takes the pool's job path."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np
import redis
from django.conf import settings

from ..codec import pack_tensors, unpack_tensors
from .pools import default_pool

logger = logging.getLogger(__name__)

REPLY_TTL_SECONDS = 120
# Every command's answer, but a reply's wait, is due within this: a Redis that stopped answering fails the
# call (a 503) instead of holding its thread.
COMMAND_TIMEOUT_SECONDS = 5
CONNECT_TIMEOUT_SECONDS = 2

_client = None
_waiting_client = None
_client_lock = threading.Lock()


class NoConsumer(Exception):
    """No worker serves the queue right now (or Redis is out of reach): take the job path."""


class Unavailable(Exception):
    """A dependency (Redis, the task queue) failed mid-call: the caller gets a 503 and may retry."""


class ModelBusy(Exception):
    """This model's queue is full: this model only is refused for now (503 with Retry-After)."""

    def __init__(self, model: str, depth: int):
        super().__init__(
            f"The model {model} has {depth} requests waiting, more than it may queue; retry in a moment."
        )
        self.retry_after = 1


@dataclass
class RequestHeader:
    """Who asked for what: everything the supervisor and the ledger need, with no database query."""

    id: str
    user_id: int
    api_key_id: int | None
    source: str
    bytes_in: int
    created_at: float
    model_id: int
    version_id: int
    sha256: str
    format: str
    file_name: str
    size: int
    inputs: list[str]
    outputs: list[str]
    batchable: bool
    model: str = ""  # owner/name, for the worker's metrics and log lines
    file_key: str = ""  # the envelope of the file's data key when it is stored encrypted (only wrapped keys)

    def as_dict(self) -> dict:
        # Shallow (`dataclasses.asdict` deep-copies, 3 % of a web worker's profile): it is serialized at once.
        return {name: getattr(self, name) for name in _HEADER_FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> RequestHeader:
        return cls(**{name: data[name] for name in _HEADER_FIELDS if name in data})


_HEADER_FIELDS = tuple(f.name for f in fields(RequestHeader))


def enabled() -> bool:
    return bool(settings.REDIS_URL) and settings.INFERENCE_INTERACTIVE


def client() -> redis.Redis:
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=COMMAND_TIMEOUT_SECONDS,
                    socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    health_check_interval=30,
                )
    return _client


def waiting_client() -> redis.Redis:
    """For replies: a BLPOP waits as long as its own timeout says, at most the longest wait a caller may ask
    for (PREDICTION_WAIT_MAX) or the prediction time limit; the socket's timeout is a little longer."""
    global _waiting_client
    if _waiting_client is None:
        with _client_lock:
            if _waiting_client is None:
                longest = max(settings.PREDICTION_WAIT_MAX, settings.PREDICTION_TIME_LIMIT + 5)
                _waiting_client = redis.Redis.from_url(
                    settings.REDIS_URL,
                    socket_timeout=longest + COMMAND_TIMEOUT_SECONDS,
                    socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    socket_keepalive=True,
                    health_check_interval=30,
                )
    return _waiting_client


def reset_client() -> None:
    """Forget the connection pools and what was seen of the workers (tests that point REDIS_URL elsewhere)."""
    global _client, _waiting_client
    with _client_lock:
        _client = _waiting_client = None
        _serving_until.clear()


def key(*parts: str) -> str:
    return settings.INFERENCE_REDIS_PREFIX + ":".join(parts)


def pool_key(kind: str, pool: str) -> str:
    """A pool's `wake` list or `alive` heartbeat; the default pool's are `wake` and `alive:`."""
    if default_pool(pool):
        return key(kind) if kind == "wake" else key(kind, "")
    return key(kind, pool)


@dataclass
class PendingCall:
    id: str
    queue_key: str
    payload: bytes


def prepare(header: RequestHeader, tensors: dict[str, np.ndarray]) -> PendingCall:
    payload = pack_tensors(header.as_dict(), tensors)
    return PendingCall(id=header.id, queue_key=key("q", header.sha256), payload=payload)


def pushes(call: PendingCall, sha256: str, pool: str) -> list[tuple[str, bytes]]:
    """What queues a call: the request onto its model's list, then a wake-up for its pool (admission pushes
    them)."""
    return [(call.queue_key, call.payload), (pool_key("wake", pool), sha256.encode())]


_serving_until: dict[str, float] = {}


def accept(call: PendingCall, depth: int, *, model: str, pool: str) -> None:
    """Keep a call just pushed, or take it back: NoConsumer when no worker serves its pool (take the job
    path), ModelBusy when its model's queue is over the limit."""
    try:
        if time.monotonic() >= _serving_until.get(pool, 0.0):
            if not serving(pool):
                if withdraw(call):
                    raise NoConsumer()
            else:
                # Heartbeats come every second and live three: one look a second per process is enough.
                _serving_until[pool] = time.monotonic() + 1
        if depth > settings.INFERENCE_MODEL_QUEUE_MAX and withdraw(call):
            raise ModelBusy(model, depth - 1)
    except redis.RedisError:
        raise NoConsumer() from None


def wait(call: PendingCall, timeout: float) -> tuple[dict, dict[str, np.ndarray]] | None:
    try:
        item = waiting_client().blpop([key("r", call.id)], timeout=max(timeout, 0.01))
    except redis.RedisError:
        # The caller and the ledger get a fixed message: Redis's own names its host and port.
        logger.warning("request queue: waiting for a reply failed", exc_info=True)
        raise Unavailable("The request queue is unavailable; retry.") from None
    if item is None:
        return None
    return unpack_tensors(item[1])


def withdraw(call: PendingCall) -> bool:
    """Take a call back off its queue; False when a runner already took it."""
    return bool(client().lrem(call.queue_key, 1, call.payload))


# --- the supervisor's side ----------------------------------------------------------------------------------


def wait_wakeup(connection: redis.Redis, pools: list[str], timeout: float) -> tuple[str, str] | None:
    """(pool, sha256) of a model that got a request in one of `pools`, waiting up to `timeout` s for one."""
    keys = {pool_key("wake", pool): pool for pool in pools}
    item = connection.blpop(list(keys), timeout=timeout)
    if not item:
        return None
    return keys[item[0].decode()], item[1].decode()


def drain_wakeups(connection: redis.Redis, pool: str) -> list[str]:
    """The other wake-ups of `pool` waiting now, one per request (under load, many for the same models)."""
    return [value.decode() for value in connection.lpop(pool_key("wake", pool), 1024) or []]


def wake_again(connection: redis.Redis, pool: str, shas) -> None:
    """Give back wake-ups taken but not served (a worker leaving): another worker of the pool takes them."""
    if shas:
        connection.rpush(pool_key("wake", pool), *[sha.encode() for sha in shas])


def fetch(connection: redis.Redis, sha256: str, limit: int) -> list[tuple[dict, dict[str, np.ndarray]]]:
    return [unpack_tensors(item) for item in connection.lpop(key("q", sha256), limit) or []]


def depth(connection: redis.Redis, sha256: str) -> int:
    return connection.llen(key("q", sha256))


def reply(pipe, prediction_id: str, header: dict, outputs: dict[str, np.ndarray] | None = None) -> None:
    reply_key = key("r", prediction_id)
    pipe.rpush(reply_key, pack_tensors(header, outputs or {}))
    pipe.expire(reply_key, REPLY_TTL_SECONDS)


def record_push(pipe, record: dict, outputs: dict[str, np.ndarray] | None) -> None:
    # No MAXLEN: an entry leaves the stream once the ledger has it (`records_done`), never before.
    pipe.xadd(records_key(), {"r": pack_tensors(record, outputs or {})})


def heartbeat(name: str, pools: list[str]) -> None:
    pipe = client().pipeline(transaction=False)
    for alive in [key("alive"), *(pool_key("alive", pool) for pool in pools)]:
        pipe.set(alive, name, ex=5)
    pipe.execute()


# Only this worker's own heartbeat goes: another worker of the pool may have written the key since.
_FORGET_HEARTBEAT = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


def heartbeat_stop(name: str, pools: list[str]) -> None:
    """A worker leaving cleanly: its pools' heartbeats end now, so the web sends their calls to the job path
    at once (another worker of the pool writes its own within a second)."""
    connection = client()
    for alive in [key("alive"), *(pool_key("alive", pool) for pool in pools)]:
        connection.eval(_FORGET_HEARTBEAT, 1, alive, name)


def serving(pool: str | None = None) -> bool:
    """A worker serves `pool` (any pool when None): its heartbeat was seen in the last few seconds."""
    return bool(client().exists(pool_key("alive", pool) if pool is not None else key("alive")))


# --- finished calls on their way to the ledger -----------------------------------------------------------
# Delivered at least once: a recorder reads entries through the consumer group, and an entry stays in the
# stream, pending for that recorder, until `records_done` after the commit. A recorder killed mid-batch leaves
# its batch pending; its successor (same consumer name) or, after a while, any recorder (`records_reclaim`)
# writes it again, and the ledger's finish() writes and counts nothing twice.

RECORDERS = "recorders"


class Record(NamedTuple):
    entry_id: bytes
    header: dict
    outputs: dict[str, np.ndarray]


def records_key() -> str:
    return key("records", "stream")


def records_take(consumer: str, limit: int = 500) -> list[Record]:
    """Finished calls for `consumer` to write, oldest first: first those it was given and has not acknowledged
    (a batch the database refused, or one its predecessor under this name was writing when it died), then new
    ones. Each stays in the stream until `records_done`."""
    connection = client()
    for start in ("0", ">"):
        entries = _records_read(connection, consumer, start, limit)
        # A pending entry deleted meanwhile comes back without its fields: nothing is left to write.
        gone = [entry_id for entry_id, values in entries if not values]
        if gone:
            records_done(gone)
        taken = [Record(entry_id, *unpack_tensors(values[b"r"])) for entry_id, values in entries if values]
        if taken:
            return taken
    return []


def _records_read(connection: redis.Redis, consumer: str, start: str, limit: int) -> list:
    stream = records_key()
    try:
        answer = connection.xreadgroup(RECORDERS, consumer, {stream: start}, count=limit)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):
            raise
        _records_group_create(connection)
        answer = connection.xreadgroup(RECORDERS, consumer, {stream: start}, count=limit)
    return answer[0][1] if answer else []


def _records_group_create(connection: redis.Redis) -> None:
    try:
        # From the stream's first entry: what was pushed before any recorder came is written too.
        connection.xgroup_create(records_key(), RECORDERS, id="0", mkstream=True)
    except redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # another recorder created it first
            raise


def records_done(entry_ids: list[bytes]) -> None:
    """These are in the database (or were dropped as unwritable): acknowledged and deleted together."""
    if entry_ids:
        pipe = client().pipeline(transaction=True)
        pipe.xack(records_key(), RECORDERS, *entry_ids)
        pipe.xdel(records_key(), *entry_ids)
        pipe.execute()


def records_reclaim(consumer: str, idle_seconds: float) -> int:
    """Make `consumer` the owner of entries given to another recorder that has not come back to them for
    `idle_seconds` (its worker died or left before writing them); `records_take` then returns them. Forgets
    recorders that hold nothing and were not seen for an hour. How many entries it took over."""
    connection = client()
    stream, cursor, claimed = records_key(), b"0-0", 0
    try:
        while True:
            cursor, entries, _deleted = connection.xautoclaim(
                stream, RECORDERS, consumer, int(idle_seconds * 1000), start_id=cursor, count=100
            )
            claimed += len(entries)
            if cursor in (b"0-0", "0-0"):
                break
        for other in connection.xinfo_consumers(stream, RECORDERS):
            name = other["name"].decode() if isinstance(other["name"], bytes) else other["name"]
            if name != consumer and not other["pending"] and other["idle"] > 3_600_000:
                connection.xgroup_delconsumer(stream, RECORDERS, name)
    except redis.ResponseError as exc:
        if "NOGROUP" not in str(exc):  # no recorder ever read: nothing to take over
            raise
    return claimed


def records_pending(connection=None) -> bool:
    """Finished calls not yet in the database (entries leave the stream only once they are written)."""
    return bool((connection or client()).xlen(records_key()))
