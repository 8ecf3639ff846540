"""What the Celery worker runs besides tasks: the interactive consumer (supervised) and the reaper.

A bootstep starts one supervisor thread in the worker's main process. It keeps an interactive consumer process
alive (when Redis is configured), answers the callers of a batch whose consumer died or ran past the hard time
limit (503, promptly), heartbeats `alive` so the web knows someone is serving, and every
`PREDICTION_REAPER_INTERVAL` seconds runs the reaper (celery beat is not part of `make run`, so the worker
carries its own timer).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from celery import bootsteps
from django.conf import settings

logger = logging.getLogger(__name__)


class Supervisor(threading.Thread):
    def __init__(self, name: str):
        super().__init__(name="inference-supervisor", daemon=True)
        self.consumer_name = name
        self.process: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self.next_reap = 0.0
        self.next_heartbeat = 0.0
        self.next_record = 0.0

    def run(self) -> None:
        while not self.stopping.wait(0.1):
            try:
                self.tick()
            except Exception:
                logger.exception("inference supervisor")
                self.stopping.wait(1)

    def tick(self) -> None:
        from . import interactive

        now = time.monotonic()
        if interactive.enabled():
            self.watch_consumer()
            if now >= self.next_heartbeat:
                interactive.client().set(interactive.key("alive"), self.consumer_name, ex=3)
                self.next_heartbeat = now + 1
            if now >= self.next_record:
                self.next_record = now + settings.INFERENCE_RECORD_INTERVAL
                self.record_finished()
        if now >= self.next_reap:
            self.next_reap = now + settings.PREDICTION_REAPER_INTERVAL
            from django.db import close_old_connections

            from .services import predictions_reap

            close_old_connections()
            predictions_reap()

    def watch_consumer(self) -> None:
        from . import interactive

        if self.process is not None and self.process.poll() is not None:
            logger.warning("interactive consumer exited (%s): restarting it", self.process.returncode)
            self.fail_inflight("The worker running this request died; it can be retried.")
            self.process = None
        if self.process is None:
            self.start_consumer()
            return
        inflight = interactive.inflight_read(self.consumer_name)
        limit = settings.CELERY_TASK_TIME_LIMIT
        if inflight and time.time() - inflight["started"] > limit:
            logger.warning("interactive batch ran past %s s: killing the consumer", limit)
            self.process.kill()
            self.process.wait()
            self.process = None
            self.fail_inflight(f"Timed out: the model ran past the {limit} s time limit.")

    def record_finished(self) -> None:
        """Write what the consumer answered, in bulk: one INSERT for every call finished since last time."""
        from datetime import UTC, datetime

        from django.db import close_old_connections

        from . import interactive
        from .services import Finished, predictions_record

        while records := interactive.records_take():
            close_old_connections()
            try:
                predictions_record(
                    [
                        Finished(
                            id=header["id"],
                            status=header["status"],
                            model_id=header["model_id"],
                            header=header,
                            outputs=outputs if header["status"] == "succeeded" else None,
                            error=header["error"],
                            started_at=datetime.fromtimestamp(header["started_at"], tz=UTC),
                            finished_at=datetime.fromtimestamp(header["finished_at"], tz=UTC),
                            queue_ms=header["queue_ms"],
                            compute_ms=header["compute_ms"],
                        )
                        for header, outputs in records
                    ]
                )
            finally:
                interactive.records_done()

    def start_consumer(self) -> None:
        from . import interactive

        self.process = subprocess.Popen(
            [sys.executable, "-m", "inference.consumer", "--name", self.consumer_name], cwd=settings.BASE_DIR
        )
        interactive.client().hset(interactive.key("consumers"), self.consumer_name, self.process.pid)

    def fail_inflight(self, error: str) -> None:
        from django.db import close_old_connections
        from django.utils import timezone

        from . import interactive
        from .services import Finished, predictions_record

        inflight = interactive.inflight_read(self.consumer_name)
        if not inflight:
            return
        redis = interactive.client()
        pipe = redis.pipeline(transaction=False)
        finished = []
        for header in inflight["headers"]:
            interactive.reply(pipe, header["id"], {"status": "failed", "error": error, "unavailable": True})
            finished.append(
                Finished(
                    id=header["id"],
                    status="failed",
                    model_id=header["model_id"],
                    header=header,
                    error=error,
                    finished_at=timezone.now(),
                )
            )
        pipe.delete(interactive.key("inflight", self.consumer_name))
        pipe.execute()
        close_old_connections()
        predictions_record(finished)

    def stop(self) -> None:
        self.stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()


class InferenceWorkerStep(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        from . import interactive

        # Runtimes size their thread pools by this (pool processes inherit it): cores / processes.
        processes = (worker.concurrency or 1) + (1 if interactive.enabled() else 0)
        os.environ["MODELPORT_WORKER_PROCESSES"] = str(processes)
        self.supervisor: Supervisor | None = None

    def start(self, worker) -> None:
        self.supervisor = Supervisor(f"{worker.hostname}:{os.getpid()}")
        self.supervisor.start()

    def stop(self, worker) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
