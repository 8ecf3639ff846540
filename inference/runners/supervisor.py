"""The supervisor: the trusted side of a worker host's runner pool, started by the Celery worker.

It feeds the pool from two places: the Redis request queue (interactive calls from the web) and a Unix socket
(jobs, from this worker's Celery tasks). It answers every caller, heartbeats `alive` so the web knows someone
serves the queue, and keeps a recorder process (`inference.recorder`) writing finished calls and reaping.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
from django.conf import settings

from marketplace.sandbox.validation import confinement
from portal.metrics import metrics_dir_prune

from ..codec import pack_tensors, unpack_tensors
from ..runtimes import local_model_path
from ..scheduling import queue
from ..scheduling.pools import default_pool
from ..scheduling.scheduler import ModelRef, Request, Result, Scheduler, Source, Waiter
from .link import BUSY, link_dir, receive_frame, send_frame
from .pool import PoolObserver, RunnerPool, RunnerSettings
from .protocol import ChannelClosed, receive_message, send_message
from .telemetry import SupervisorTelemetry

logger = logging.getLogger(__name__)

SOCKET_ENV = "MODELPORT_SUPERVISOR_SOCKET"


def model_ref(header: dict) -> ModelRef:
    return ModelRef(
        sha256=header["sha256"],
        format=header["format"],
        file_name=header["file_name"],
        size=header["size"],
        inputs=tuple(header["inputs"]),
        outputs=tuple(header["outputs"]),
        batchable=header["batchable"],
        file_key=header.get("file_key", ""),
        tenant=header["model"].partition("/")[0],
    )


def reply_header(result: Result) -> dict:
    if result.succeeded:
        return {"status": "succeeded", "compute_ms": result.compute_ms}
    # A runner's time limit, crash or a missing file is the server's fault, not the caller's: 503 on /v2.
    return {"status": "failed", "error": result.error, "unavailable": result.server_fault}


def pool_from_settings(name: str, observer: PoolObserver | None = None) -> RunnerPool:
    # One runner per core, plus one that a busy model may not take: the other models' calls always find one.
    runners = settings.INFERENCE_RUNNERS or (os.cpu_count() or 1) + 1
    cap = settings.INFERENCE_MODEL_CONCURRENCY or max(1, runners - 1)
    return RunnerPool(
        name=name,
        runners=runners,
        model_concurrency=cap,
        max_batch=settings.INFERENCE_MAX_BATCH,
        rss_budget_mb=settings.INFERENCE_RUNNER_RSS_BUDGET_MB,
        config=RunnerSettings(
            memory_mb=settings.INFERENCE_RUNNER_MEMORY_MB,
            threads=settings.INFERENCE_THREADS_PER_RUNNER or max(1, (os.cpu_count() or 1) // runners),
            session_budget_mb=settings.INFERENCE_SESSION_MEMORY_MB,
            time_limit=settings.PREDICTION_TIME_LIMIT,
            confinement=confinement(),
            max_output_mb=settings.INFERENCE_MAX_OUTPUT_MB,
        ),
        resolve_path=lambda model: str(
            local_model_path(sha256=model.sha256, file_name=model.file_name, file_key=model.file_key)
        ),
        observer=observer,
    )


class QueueSource(Source):
    """Interactive calls of one pool: fetched from their model's Redis queue only when a runner is free."""

    def __init__(self, pool: str):
        self.pool = pool
        self.redis = queue.client()

    def fetch(self, sha256: str, limit: int) -> list[Request]:
        return [
            Request(id=header["id"], model=model_ref(header), tensors=tensors, source=self, header=header)
            for header, tensors in queue.fetch(self.redis, sha256, limit)
        ]

    def deliver(self, requests: list[Request], results: list[Result]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for request, result in zip(requests, results, strict=True):
            # The recorder writes these to the database in bulk: the serving loop never waits on it. The
            # record is queued before the reply, so a caller holding its answer finds it written or pending.
            queue.record_push(pipe, finished_record(request, result), result.outputs)
            queue.reply(pipe, request.id, reply_header(result), result.outputs)
        pipe.execute()


def finished_record(request: Request, result: Result) -> dict:
    """What the recorder writes of an interactive call that ran (`ledger.ended_from_record` reads it)."""
    return {
        **request.header,
        "status": "succeeded" if result.succeeded else "failed",
        "error": result.error,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "queue_ms": max(0.0, (result.started_at - request.header["created_at"]) * 1000),
        "compute_ms": result.compute_ms,
    }


class LinkSource(Source):
    """The calls of one web process's link (`link.py`), answered on its connection once their records are
    queued, as the queue's are."""

    def __init__(self, connection: socket.socket):
        self.connection = connection
        self.redis = queue.client()
        self.lock = threading.Lock()
        self.sha_of: dict[str, str] = {}  # calls not answered yet: id -> their model

    def put(self, scheduler: Scheduler, request: Request) -> None:
        with self.lock:
            self.sha_of[request.id] = request.model.sha256
        scheduler.put(request)

    def cancel(self, scheduler: Scheduler, call_id: str) -> None:
        """The caller is gone (it recorded the call as canceled): not run if no runner has it yet."""
        with self.lock:
            sha = self.sha_of.pop(call_id, None)
        if sha is not None and scheduler.withdraw(sha, call_id) is not None:
            logger.info("call %s canceled before it ran", call_id)

    def deliver(self, requests: list[Request], results: list[Result]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for request, result in zip(requests, results, strict=True):
            queue.record_push(pipe, finished_record(request, result), result.outputs)
        pipe.execute()
        with self.lock:
            for request in requests:
                self.sha_of.pop(request.id, None)
        for request, result in zip(requests, results, strict=True):
            self.answer({"id": request.id, **reply_header(result)}, result.outputs)

    def answer(self, header: dict, outputs: dict[str, np.ndarray] | None = None) -> None:
        try:
            with self.lock:
                send_frame(self.connection, header, outputs)
        except OSError:  # the web process went away: the record is queued all the same
            logger.info("a linked web process left before call %s was answered", header["id"])


class Supervisor:
    def __init__(self, name: str, socket_path: str, pools: list[str]):
        self.name = name
        self.pools = pools  # the queues this worker serves (`pools.served_pools`)
        self.socket_path = socket_path
        self.telemetry = SupervisorTelemetry(name, pools)
        self.pool = pool_from_settings(name.replace("@", "-").replace(":", "-"), self.telemetry)
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.listener: socket.socket | None = None
        self.recorder: subprocess.Popen | None = None  # records and reaper: `inference.recorder`
        self.maintenance: threading.Thread | None = None
        self.wakeups: threading.Thread | None = None
        self.link_listener: socket.socket | None = None
        self.link_path = ""
        self.link_connections: list[socket.socket] = []

    def start(self) -> None:
        metrics_dir_prune()  # a previous run's files; this worker's pool processes write their own
        self.pool.start()
        self._thread(self.serve_socket, "supervisor-socket")
        if queue.enabled():
            self.queue_sources = {pool: QueueSource(pool) for pool in self.pools}
            self.wakeups = self._thread(self.listen_for_wakeups, "supervisor-wakeups")
            if settings.INFERENCE_LINK:
                self._link_listen()
        self.maintenance = self._thread(self.maintain, "supervisor-maintenance")
        self._thread(self.publish_status, "supervisor-telemetry")

    def _thread(self, target, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)
        return thread

    def stop(self) -> None:
        self.stopping.set()
        if self.listener is not None:
            self.listener.close()
        self._link_close_listener()
        if self.maintenance is not None:
            self.maintenance.join(10)  # it restarts a recorder that exits: not once this one is ended
        if queue.enabled():
            if self.wakeups is not None:
                self.wakeups.join(5)  # its last heartbeat comes before the pools are left, never after
            self.leave_pools()
        self.pool.stop()
        self._link_hang_up()
        if queue.enabled():
            self.telemetry.publish(self.pool)  # the statistics of the last second
        self._recorder_stop()
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass

    def _recorder_stop(self) -> None:
        """End the recorder once it has written what the pool answered (a few seconds at the most)."""
        if self.recorder is None or self.recorder.poll() is not None:
            return
        deadline = time.monotonic() + 10
        try:
            while queue.enabled() and queue.records_pending() and time.monotonic() < deadline:
                time.sleep(0.05)
        except Exception:  # Redis is gone: what is left is written by the next recorder on this prefix
            logger.warning("stopping with records not yet written")
        self.recorder.terminate()
        try:
            self.recorder.wait(10)
        except subprocess.TimeoutExpired:
            self.recorder.kill()

    # --- interactive calls ---------------------------------------------------------------------------------

    def listen_for_wakeups(self) -> None:
        # The heartbeat comes from this loop, the queue's consumer: while it beats, someone takes the calls.
        connection = queue.client()
        next_heartbeat = 0.0
        while not self.stopping.is_set():
            try:
                if time.monotonic() >= next_heartbeat:
                    queue.heartbeat(self.name, self.pools)
                    next_heartbeat = time.monotonic() + 1
                first = queue.wait_wakeup(connection, self.pools, timeout=0.5)
                if first is None:
                    continue
                pool, sha = first
                # A runner starts on the first model at once; the rest of the wake-ups are read meanwhile.
                self.pool.scheduler.wake(self.queue_sources[pool], [sha])
                for pool_name, source in self.queue_sources.items():
                    more = queue.drain_wakeups(connection, pool_name)
                    if more:
                        self.pool.scheduler.wake(source, more)
            except Exception:
                logger.exception("reading wake-ups")
                self.stopping.wait(1)

    def leave_pools(self) -> None:
        """Leaving cleanly: the heartbeats end now (the web sends new calls to the job path, or to the pool's
        other workers), and the wake-ups taken but not served go back for another worker of the pool."""
        try:
            queue.heartbeat_stop(self.name, self.pools)
            connection = queue.client()
            for source, shas in self.pool.scheduler.pending_remote().items():
                queue.wake_again(connection, source.pool, shas)
        except Exception:
            logger.exception("handing the pools back")

    # --- calls from linked web processes on this host (`link.py`) ------------------------------------------

    def _link_listen(self) -> None:
        folder = link_dir()
        self.link_path = str(folder / f"{os.getpid()}.sock")
        for path in folder.glob("*.sock"):  # sockets of supervisors that ended without removing theirs
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                except ConnectionRefusedError:
                    path.unlink(missing_ok=True)
                except OSError:
                    pass
        try:
            os.unlink(self.link_path)
        except OSError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        for _attempt in range(3):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                listener.bind(self.link_path)
                break
            except FileNotFoundError:  # the last supervisor of this deployment removed the folder just now
                continue
        else:
            listener.close()
            raise RuntimeError(f"could not listen on {self.link_path}")
        os.chmod(self.link_path, 0o600)
        listener.listen(64)
        self.link_listener = listener
        self._thread(self._link_accept, "supervisor-link")

    def _link_accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.link_listener.accept()
            except OSError:
                return
            self.link_connections.append(connection)
            threading.Thread(target=self.serve_link, args=(connection,), daemon=True).start()

    def serve_link(self, connection: socket.socket) -> None:
        """Take one web process's calls into the pool's scheduler, as they come, until it hangs up."""
        source = LinkSource(connection)
        pools = [pool for pool in self.pools if not default_pool(pool)]
        source.answer(
            {
                "id": "",
                "name": self.name,
                "pools": pools,
                "default": len(pools) < len(self.pools),
            }
        )
        scheduler = self.pool.scheduler
        try:
            while not self.stopping.is_set():
                header, tensors = receive_frame(connection)
                if header.get("cancel"):
                    source.cancel(scheduler, header["id"])
                    continue
                waiting = scheduler.waiting(header["sha256"])
                if waiting >= header.pop("queue_max", settings.INFERENCE_MODEL_QUEUE_MAX):
                    source.answer({"id": header["id"], "status": BUSY, "depth": waiting})
                    continue
                request = Request(
                    id=header["id"], model=model_ref(header), tensors=tensors, source=source, header=header
                )
                source.put(scheduler, request)
        except (ChannelClosed, OSError, ValueError):
            pass
        finally:
            connection.close()

    def _link_close_listener(self) -> None:
        """No new web process links to a supervisor that is leaving; those linked keep theirs until the pool
        has answered what it took."""
        if self.link_listener is not None:
            self.link_listener.close()
            self.link_listener = None
            try:
                os.unlink(self.link_path)
                os.rmdir(os.path.dirname(self.link_path))  # when it was the deployment's last supervisor
            except OSError:
                pass

    def _link_hang_up(self) -> None:
        # Calls still waiting in the scheduler are never run: their callers hear so at once (LinkLost, a 503).
        for connection in self.link_connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # --- jobs ----------------------------------------------------------------------------------------------

    def serve_socket(self) -> None:
        try:
            os.unlink(self.socket_path)
        except OSError:
            pass
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.socket_path)
        os.chmod(self.socket_path, 0o600)
        self.listener.listen(64)
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve_job, args=(connection,), daemon=True).start()

    def serve_job(self, connection: socket.socket) -> None:
        with connection:
            try:
                header, tensors = unpack_tensors(receive_message(connection))
                source = JobSource(connection)
                request = Request(
                    id=header["id"], model=model_ref(header), tensors=tensors, source=source, header=header
                )
                self.pool.scheduler.put(request)
                result = source.wait()
                send_message(connection, pack_tensors(reply_header(result), result.outputs or {}))
            except (ChannelClosed, OSError):
                logger.warning("a job's connection closed before its answer")

    # --- upkeep --------------------------------------------------------------------------------------------

    def maintain(self) -> None:
        while not self.stopping.wait(0.1):
            try:
                if self.recorder is None or self.recorder.poll() is not None:
                    if self.recorder is not None:
                        logger.warning("the recorder exited (%s): restarting it", self.recorder.returncode)
                    # A session of its own: a signal to the worker's process group does not cut it off
                    # mid-batch; the supervisor ends it after the pool's last records (`_recorder_stop`).
                    self.recorder = subprocess.Popen(
                        [sys.executable, "-m", "inference.recorder"],
                        cwd=settings.BASE_DIR,
                        start_new_session=True,
                    )
            except Exception:
                logger.exception("supervisor upkeep")
                self.stopping.wait(1)

    def publish_status(self) -> None:
        # A thread of its own: however long a publication takes, serving and the recorder's watch go on.
        while not self.stopping.wait(1):
            if not queue.enabled():
                continue
            try:
                self.telemetry.publish(self.pool)
            except Exception:
                logger.exception("publishing the worker's status and statistics")


def run_on(pool: RunnerPool, header: dict, tensors: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """Run one job's request on `pool` and wait: the reply header and the outputs (tests' runner pools)."""
    result = pool.run(model_ref(header), tensors, request_id=header["id"], header=header)
    return reply_header(result), result.outputs or {}


class JobSource(Waiter):
    """One job from a Celery task (`run_via_supervisor`): told when a runner takes it, then its result."""

    STARTED = {"started": True}

    def __init__(self, connection: socket.socket):
        super().__init__()
        self.connection = connection

    def started(self, requests: list[Request]) -> None:
        try:
            send_message(self.connection, pack_tensors(self.STARTED, {}))
        except OSError:  # the task went away; its result is dropped with the connection
            pass


def run_via_supervisor(
    header: dict, tensors: dict[str, np.ndarray], timeout: float, on_start=None
) -> tuple[dict, dict]:
    """A job's way to this host's runner pool (from a Celery pool process). `on_start()` is called when a
    runner takes it; `timeout` bounds each wait on the pool."""
    path = os.environ.get(SOCKET_ENV)
    if not path:
        raise ConnectionError("this process has no runner pool to talk to (is it a Celery worker?)")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(path)
        send_message(connection, pack_tensors(header, tensors))
        while True:
            reply, outputs = unpack_tensors(receive_message(connection))
            if reply != JobSource.STARTED:
                return reply, outputs
            if on_start is not None:
                on_start()
