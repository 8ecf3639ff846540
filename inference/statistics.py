"""Per-version inference statistics in Triton's form (the statistics extension), summed across workers.

Each worker's supervisor adds what its runners did to one Redis hash per model version
(`stats:<version id>`), once a second with its heartbeat, in one pipeline: the predict path pays nothing for
it, and every worker adds into the same counters, so any web process reads the whole deployment's figures in
one round trip. (The Prediction table holds the same facts, but its interactive records land in batches, a
moment late, and adding up a busy model's rows on every read would cost far more than reading a hash.)
"""

from __future__ import annotations

import threading
from collections import defaultdict

from .scheduling import queue

NS_PER_MS = 1_000_000


def stats_key(version_id) -> str:
    return queue.key("stats", str(version_id))


class StatisticsBuffer:
    """What the runners did since the last flush, by version id (thread-safe: runner slots add to it)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.pending: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add_batch(self, requests, results) -> None:
        executions: set[int] = set()
        with self.lock:
            for request, result in zip(requests, results, strict=True):
                version_id = request.header.get("version_id")
                if version_id is None:
                    continue
                fields = self.pending[version_id]
                queued = max(0.0, result.started_at - request.header.get("created_at", result.started_at))
                queue_ns = int(queued * 1e9)
                compute_ns = int(result.compute_ms * NS_PER_MS)
                outcome = "success" if result.succeeded else "fail"
                fields[f"{outcome}_count"] += 1
                fields[f"{outcome}_ns"] += queue_ns + compute_ns
                if result.succeeded:
                    fields["inference_count"] += 1
                    fields["queue_count"] += 1
                    fields["queue_ns"] += queue_ns
                    fields["compute_infer_count"] += 1
                    fields["compute_infer_ns"] += compute_ns
                    fields["last_inference"] = max(fields["last_inference"], int(result.finished_at * 1000))
                    executions.add(version_id)
            size = len(requests)
            for version_id in executions:
                fields = self.pending[version_id]
                fields["execution_count"] += 1
                fields[f"batch:{size}:count"] += 1
                fields[f"batch:{size}:ns"] += int(results[0].compute_ms * size * NS_PER_MS)

    def flush(self, connection) -> None:
        with self.lock:
            pending, self.pending = self.pending, defaultdict(lambda: defaultdict(int))
        if not pending:
            return
        pipe = connection.pipeline(transaction=False)
        for version_id, fields in pending.items():
            key = stats_key(version_id)
            for name, value in fields.items():
                if name == "last_inference":
                    continue
                pipe.hincrby(key, name, value)
            if fields.get("last_inference"):
                # The latest wins, whichever worker wrote last (HSET of the larger value via a max script
                # would be exact; a few milliseconds between workers do not matter to a reader).
                pipe.hset(key, "last_inference", fields["last_inference"])
        pipe.execute()


def _pair(fields: dict, name: str) -> dict:
    return {"count": fields.get(f"{name}_count", 0), "ns": fields.get(f"{name}_ns", 0)}


def model_stats(*, name: str, versions: list[tuple[int, int]]) -> dict:
    """Triton's `/stats` body for `versions` [(number, version id)] of the model `name` (owner/name)."""
    entries = []
    if queue.enabled():
        pipe = queue.client().pipeline(transaction=False)
        for _, version_id in versions:
            pipe.hgetall(stats_key(version_id))
        hashes = pipe.execute()
    else:
        hashes = [{} for _ in versions]  # without Redis no worker shares its figures
    for (number, _), raw in zip(versions, hashes, strict=True):
        fields = {key.decode(): int(value) for key, value in raw.items()}
        success = _pair(fields, "success")
        batches = sorted(
            int(key.split(":")[1]) for key in fields if key.startswith("batch:") and key.endswith(":count")
        )
        entries.append(
            {
                "name": name,
                "version": str(number),
                "last_inference": fields.get("last_inference", 0),
                "inference_count": fields.get("inference_count", 0),
                "execution_count": fields.get("execution_count", 0),
                "inference_stats": {
                    "success": success,
                    "fail": _pair(fields, "fail"),
                    "queue": _pair(fields, "queue"),
                    # Runners convert inputs and outputs inside the call they time: it is all compute_infer.
                    "compute_input": {"count": success["count"], "ns": 0},
                    "compute_infer": _pair(fields, "compute_infer"),
                    "compute_output": {"count": success["count"], "ns": 0},
                    "cache_hit": {"count": 0, "ns": 0},
                    "cache_miss": {"count": 0, "ns": 0},
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": {"count": fields[f"batch:{size}:count"], "ns": 0},
                        "compute_infer": {
                            "count": fields[f"batch:{size}:count"],
                            "ns": fields.get(f"batch:{size}:ns", 0),
                        },
                        "compute_output": {"count": fields[f"batch:{size}:count"], "ns": 0},
                    }
                    for size in batches
                ],
                "memory_usage": [],
            }
        )
    return {"model_stats": entries}
