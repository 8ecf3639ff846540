"""What the supervisor tells about its runners: metrics, Triton statistics, log lines, a status blob.

All of it on the trusted side: runners only report their resident memory and open models in their replies.
Metrics are memory-mapped writes; statistics are buffered and flushed to Redis by the supervisor's upkeep
loop, as is the status blob the operations page reads, so serving a request costs no extra round trip.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import deque

from portal import metrics

from ..scheduling import queue
from ..scheduling.scheduler import Request, Result
from ..statistics import StatisticsBuffer
from .pool import PoolObserver, RunnerPool, RunnerSlot

logger = logging.getLogger("modelport.predictions")

STATUS_TTL_SECONDS = 5
MODELS_SEEN_SECONDS = 600  # queue depths are reported for models served this recently


def status_key(name: str) -> str:
    return queue.key("status", name)


def status_pattern() -> str:
    return queue.key("status", "*")


class SupervisorTelemetry(PoolObserver):
    def __init__(self, name: str, pools: list[str] | None = None):
        self.name = name
        self.pools = pools or []  # the queues the worker serves, shown on the operations page
        self.statistics = StatisticsBuffer()
        self.lock = threading.Lock()
        self.models: dict[str, tuple[str, float]] = {}  # sha256 -> (owner/name, last seen)
        self.restarts: deque[dict] = deque(maxlen=20)

    # --- from the runner slots' threads ---------------------------------------------------------------------

    def batch_ran(
        self, slot: RunnerSlot, requests: list[Request], results: list[Result], *, cache_hit, evicted: int
    ) -> None:
        slug = requests[0].header.get("model", "")
        label = metrics.model_label(slug)
        with self.lock:
            self.models[requests[0].model.sha256] = (slug, time.monotonic())
        metrics.batch_size.labels(label).observe(len(requests))
        if cache_hit is True:
            metrics.session_cache_hits_total.inc()
        elif cache_hit is False:
            metrics.session_cache_misses_total.inc()
        if evicted:
            metrics.session_cache_evictions_total.inc(evicted)
        for request, result in zip(requests, results, strict=True):
            # A batch holds one model file, which several models (or versions) may share: label each request.
            own = request.header.get("model", "")
            own_label = label if own == slug else metrics.model_label(own)
            created_at = request.header.get("created_at") or result.started_at
            queued = max(0.0, result.started_at - created_at)
            metrics.queue_seconds.labels(own_label).observe(queued)
            metrics.compute_seconds.labels(own_label).observe(result.compute_ms / 1000)
            # One line per finished prediction; never its inputs or outputs.
            logger.info(
                "prediction",
                extra={
                    "prediction": request.id,
                    "model": own,
                    "version_id": request.header.get("version_id"),
                    "status": "succeeded" if result.succeeded else "failed",
                    "queue_ms": round(queued * 1000, 3),
                    "compute_ms": round(result.compute_ms, 3),
                    "batch": len(requests),
                    "runner": slot.index,
                    **({"error": result.error} if not result.succeeded else {}),
                },
            )
        self.statistics.add_batch(requests, results)

    def runner_replaced(self, slot: RunnerSlot, cause: str) -> None:
        metrics.runner_restarts_total.labels(cause).inc()
        with self.lock:
            self.restarts.appendleft({"slot": slot.index, "cause": cause, "at": time.time()})

    # --- from the upkeep loop -------------------------------------------------------------------------------

    def publish(self, pool: RunnerPool) -> None:
        """Flush statistics, refresh the gauges and publish this worker's status (once a heartbeat)."""
        connection = queue.client()
        self.statistics.flush(connection)
        now = time.monotonic()
        with self.lock:
            for sha in [sha for sha, (_, seen) in self.models.items() if now - seen > MODELS_SEEN_SECONDS]:
                del self.models[sha]
            models = dict(self.models)
            restarts = list(self.restarts)
        pipe = connection.pipeline(transaction=False)
        for sha in models:
            pipe.llen(queue.key("q", sha))
        depths = dict(zip(models, pipe.execute(), strict=True)) if models else {}
        by_slug = {slug: depths[sha] for sha, (slug, _) in models.items()}
        # Calls waiting here too: those of linked web processes (and jobs), besides the Redis queue's, for
        # models that may not have finished a call yet.
        for sha, (slug, waiting) in pool.scheduler.waiting_models().items():
            slug = models.get(sha, (slug,))[0] or sha[:12]
            by_slug[slug] = by_slug.get(slug, 0) + waiting
        for slug, depth in by_slug.items():
            metrics.queue_depth.labels(metrics.model_label(slug)).set(depth)
        runner_rows = []
        for slot in pool.slots:
            runner = slot.runner
            alive = runner is not None and runner.alive()
            if alive:
                metrics.runner_resident_bytes.labels(str(slot.index)).set(runner.rss)
            runner_rows.append(
                {
                    "slot": slot.index,
                    "pid": runner.pid if alive else None,
                    "alive": alive,
                    "rss": runner.rss if alive else 0,
                    "warm": [
                        models.get(sha, (sha[:12], 0))[0] for sha in (runner.open_models if alive else [])
                    ],
                    "restarts": dict(slot.restarts),
                }
            )
        metrics.runners.set(sum(row["alive"] for row in runner_rows))
        status = {
            "name": self.name,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "pools": self.pools,
            "seen_at": time.time(),
            "runners": runner_rows,
            "queues": by_slug,
            "restarts": restarts,
        }
        connection.set(status_key(self.name), json.dumps(status), ex=STATUS_TTL_SECONDS)
