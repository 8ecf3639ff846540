"""The interactive path: a lean request/reply over Redis lists, served by a consumer the worker supervises.

The web pushes a request (a JSON header and the tensors' bytes) onto the model's queue `q:<sha256>`, pushes
the sha256 onto `wake`, and waits on its own reply key. The consumer pops a wake-up, drains the model's queue
and runs one batched call per model, replies to each caller, then records the whole batch in the database at
once.

Keys (under `INFERENCE_REDIS_PREFIX`): `wake`, `q:<sha256>`, `r:<prediction id>`, `alive` (the supervisors'
heartbeat: no consumer, no point waiting), `inflight:<consumer>` (the batch being run, so a supervisor can
answer its callers when the consumer dies), `consumers` (consumer name -> pid), `records` (finished calls
the supervisor writes to the database in bulk).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass

import numpy as np
from django.conf import settings

from .codec import pack_tensors, unpack_tensors

_client = None
_client_lock = threading.Lock()

REPLY_TTL_SECONDS = 120


class NoConsumer(Exception):
    """No worker serves interactive calls right now (or Redis is out of reach): take the job path."""


class Unavailable(Exception):
    """A dependency (Redis, the task queue) failed mid-call: the caller gets a 503 and may retry."""


def enabled() -> bool:
    return bool(settings.REDIS_URL) and settings.INFERENCE_INTERACTIVE


def client():
    global _client
    if _client is None:
        import redis

        with _client_lock:
            if _client is None:
                _client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
    return _client


def key(*parts: str) -> str:
    return settings.INFERENCE_REDIS_PREFIX + ":".join(parts)


@dataclass
class PendingCall:
    id: str
    queue_key: str
    payload: bytes


def submit(*, header: dict, tensors: dict[str, np.ndarray], queue: str) -> PendingCall:
    payload = pack_tensors(header, tensors)
    call = PendingCall(id=header["id"], queue_key=key("q", queue), payload=payload)
    import redis

    pipe = client().pipeline(transaction=False)
    pipe.rpush(call.queue_key, payload)
    pipe.rpush(key("wake"), queue)
    pipe.exists(key("alive"))
    try:
        _, _, alive = pipe.execute()
        if not alive and withdraw(call):
            raise NoConsumer()
    except redis.RedisError:
        raise NoConsumer() from None
    return call


def wait(call: PendingCall, timeout: float) -> tuple[dict, dict[str, np.ndarray]] | None:
    import redis

    try:
        item = client().blpop([key("r", call.id)], timeout=max(timeout, 0.01))
    except redis.RedisError as exc:
        raise Unavailable(f"The interactive queue is unavailable ({exc}); retry.") from None
    if item is None:
        return None
    return unpack_tensors(item[1])


def withdraw(call: PendingCall) -> bool:
    """Take a call back off its queue; False when a consumer already took it."""
    return bool(client().lrem(call.queue_key, 1, call.payload))


def reply(pipe, prediction_id: str, header: dict, outputs: dict[str, np.ndarray] | None = None) -> None:
    reply_key = key("r", prediction_id)
    pipe.rpush(reply_key, pack_tensors(header, outputs or {}))
    pipe.expire(reply_key, REPLY_TTL_SECONDS)


def records_take(limit: int = 500) -> list[tuple[dict, dict[str, np.ndarray]]]:
    """Finished interactive calls the consumer left to be recorded, oldest first.

    Taking them raises the `recording` flag in the same transaction; `records_done()` lowers it once they are
    in the database, so "nothing pending" (`records_pending()`) means written, not merely popped.
    """
    pipe = client().pipeline(transaction=True)
    pipe.lpop(key("records"), limit)
    pipe.set(key("recording"), 1, ex=60)
    items, _ = pipe.execute()
    if not items:
        records_done()
    return [unpack_tensors(item) for item in items or []]


def records_done() -> None:
    client().delete(key("recording"))


def records_pending(connection=None) -> bool:
    pipe = (connection or client()).pipeline(transaction=False)
    pipe.llen(key("records"))
    pipe.exists(key("recording"))
    queued, recording = pipe.execute()
    return bool(queued or recording)


def inflight_read(consumer: str) -> dict | None:
    raw = client().get(key("inflight", consumer))
    return json.loads(raw) if raw else None
