"""The trusted side of the runners: processes, time limit, replacement.

`RunnerPool` keeps `runners` processes, each driven by one thread. A thread takes the next batch from the
`Scheduler` (`inference.scheduling.scheduler`), which hands out models round-robin and never lets one model
hold more than `model_concurrency` runners, so a slow, stuck or crashing model leaves the others their
runners. The thread runs the batch on its runner with a deadline; past it the runner is killed and replaced,
and the batch's callers are told. A runner that dies fails only its batch; one whose resident memory stays
over its budget after a call is replaced."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from marketplace.files import FileUnavailable
from marketplace.sandbox import confine
from marketplace.sandbox.confine import Confinement

from ..scheduling.scheduler import ModelRef, Request, Result, Scheduler, Source, Waiter
from .limits import MemoryCgroup
from .protocol import ChannelClosed, FrameTooLarge, read_frame, write_frame

logger = logging.getLogger(__name__)


# The size of a runner's pipes (Linux's default ceiling for a process, /proc/sys/fs/pipe-max-size).
PIPE_BYTES = 1 << 20
PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Variables a runner may inherit: none of them carries a secret.
INHERITED_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "TZ")


class PoolObserver:
    """What the trusted side learns as the pool works (metrics, statistics, log lines). Called from the
    runner slots' threads, so implementations must be thread-safe and quick: the base does nothing."""

    def batch_ran(
        self, slot: RunnerSlot, requests: list[Request], results: list[Result], *, cache_hit, evicted: int
    ) -> None:
        pass

    def runner_replaced(self, slot: RunnerSlot, cause: str) -> None:
        pass


class RunnerFailed(Exception):
    def __init__(self, message: str, *, server_fault: bool, restart_cause: str):
        super().__init__(message)
        self.server_fault = server_fault
        self.restart_cause = restart_cause


@dataclass
class RunnerSettings:
    memory_mb: int = 2048
    threads: int = 1
    session_budget_mb: int = 512
    time_limit: float = 30.0
    confinement: Confinement = field(default_factory=Confinement)
    start_timeout: float = 60.0
    max_output_mb: int = 256  # the largest answer read from a runner


class RunnerProcess:
    """One runner: a confined child process (`confine.spawn`) with a clean environment, its own cgroup (memory
    and pids), a pair of pipes for requests and replies, and a Unix socket on which the trusted side hands it
    each model file as an open, read-only descriptor: a runner has no path to any stored file."""

    def __init__(self, name: str, config: RunnerSettings):
        self.name, self.config = name, config
        self.process = None
        self.cgroup: MemoryCgroup | None = None
        self.home: str | None = None
        self.to_runner = self.from_runner = -1
        self.handoff: socket.socket | None = None
        self.rss = 0
        self.open_models: list[str] = []  # sha256s, as the runner last reported
        self.tenant: str | None = None  # the tenant whose models it has opened, once it has

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        config = self.config
        limit = config.memory_mb * 1024 * 1024
        self.cgroup = MemoryCgroup.create(self.name, limit)
        request_read, request_write = os.pipe()
        reply_read, reply_write = os.pipe()
        for pipe in (request_write, reply_write):
            # A whole image in one write: at the default 64 KiB a 3×96×96 input took turns of both processes.
            with contextlib.suppress(OSError):  # a host whose ceiling is lower keeps the default
                fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.handoff, handoff_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if config.confinement.sandbox:
            home = "/tmp"  # noqa: S108 - the runner's own tmpfs
        else:
            self.home = home = tempfile.mkdtemp(prefix="modelport-runner-")
            if config.confinement.user and os.geteuid() == 0:
                os.chown(self.home, *confine.runner_identity(config.confinement.user))
        env = {
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": home,
            "TMPDIR": home,
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": str(config.threads),
            "MKL_NUM_THREADS": str(config.threads),
            **{name: os.environ[name] for name in INHERITED_ENV if name in os.environ},
        }
        try:
            runner = [
                "-m",
                "inference.runners.runner",
                "--in-fd",
                str(request_read),
                "--out-fd",
                str(reply_write),
                "--handoff-fd",
                str(handoff_child.fileno()),
                "--threads",
                str(config.threads),
                "--session-budget-mb",
                str(config.session_budget_mb),
            ]
            self.process = confine.spawn(
                runner,
                confinement=config.confinement,
                env=env,
                cwd=PROJECT_ROOT,  # `-m inference.runners.runner` (in the sandbox, the project's code alone)
                # Without a cgroup, an address-space limit.
                address_space_mb=0 if self.cgroup else config.memory_mb,
                pass_fds=(request_read, reply_write, handoff_child.fileno()),
            )
        finally:
            os.close(request_read)
            os.close(reply_write)
            handoff_child.close()
        self.to_runner, self.from_runner = request_write, reply_read
        if self.cgroup:
            self.cgroup.attach(self.process.pid)
        self.oom_kills_at_start = self.cgroup.oom_kills() if self.cgroup else 0
        header, _ = self._read(time.monotonic() + config.start_timeout)
        if self.cgroup:
            # bwrap may fork the runner before the first attach lands: every process of the tree goes in.
            for pid in descendants(self.process.pid):
                self.cgroup.attach(pid)
        self.rss = header.get("rss", 0)
        logger.info("runner %s started (pid %s)", self.name, self.process.pid)

    def call(self, header: dict, tensors: dict[str, np.ndarray], deadline: float):
        """Run one request. `header["path"]` is the model's file on this side: when the runner does not hold
        the model open, the file goes over as a read-only descriptor, never as a path."""
        header = dict(header)
        path = header.pop("path")
        try:
            if header["sha256"] not in self.open_models:
                header["handoff"] = True
                self._hand_over(path)
            write_frame(self.to_runner, header, tensors)
        except OSError:
            raise self._died() from None
        reply, outputs = self._read(deadline)
        self.rss = reply.get("rss", self.rss)
        self.open_models = reply.get("open", self.open_models)
        return reply, outputs

    def _hand_over(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        try:
            socket.send_fds(self.handoff, [b"m"], [fd])
        finally:
            os.close(fd)

    def _read(self, deadline: float):
        # The runner's exit is looked for too, not only the end of its pipe: a process forked while the pipe
        # was being set up (the worker's own pool children fork at any time) may hold its write end open.
        while True:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.from_runner], [], [], max(0.0, min(remaining, 0.5)))
            if ready:
                break
            if self.process is not None and self.process.poll() is not None:
                raise self._died()
            if remaining <= 0.5:
                raise RunnerFailed(
                    f"Timed out: the model ran past the {self.config.time_limit:g} s time limit.",
                    server_fault=True,
                    restart_cause="time",
                )
        try:
            return read_frame(self.from_runner, limit=self.config.max_output_mb << 20, deadline=deadline)
        except TimeoutError:
            raise RunnerFailed(
                f"Timed out: the model ran past the {self.config.time_limit:g} s time limit.",
                server_fault=True,
                restart_cause="time",
            ) from None
        except FrameTooLarge as exc:
            raise RunnerFailed(
                f"The model's answer ({exc.size >> 20} MB) is larger than the {self.config.max_output_mb} MB "
                "a prediction may return (INFERENCE_MAX_OUTPUT_MB).",
                server_fault=False,
                restart_cause="output",
            ) from None
        except (ChannelClosed, OSError):
            raise self._died() from None

    def _died(self) -> RunnerFailed:
        code = self.process.wait() if self.process else None
        if self.cgroup and self.cgroup.oom_kills() > self.oom_kills_at_start:
            return RunnerFailed(
                f"The model needed more memory than a runner may use ({self.config.memory_mb} MB).",
                # A batch's memory is not one caller's doing: the same call alone may pass (a 503).
                server_fault=True,
                restart_cause="memory",
            )
        return RunnerFailed(
            f"The runner running this model died (exit status {code}); the request can be retried.",
            server_fault=True,
            restart_cause="crash",
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
        for fd in (self.to_runner, self.from_runner):
            if fd >= 0:
                os.close(fd)
        self.to_runner = self.from_runner = -1
        if self.handoff is not None:
            self.handoff.close()
            self.handoff = None
        if self.cgroup:
            self.cgroup.remove()
        if self.home:
            shutil.rmtree(self.home, ignore_errors=True)
        self.process = None


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (the runner sits under bwrap and its init)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as handle:
                    todo.extend(int(child) for child in handle.read().split())
        except OSError:  # ended meanwhile
            continue
    return found


def concatenable(model: ModelRef, batch: list[dict[str, np.ndarray]]) -> bool:
    if not model.batchable or len(batch) < 2:
        return False
    for tensors in batch:
        if len({array.shape[0] for array in tensors.values()}) != 1:
            return False
    first = batch[0]
    return all(
        tensors.keys() == first.keys()
        and all(
            tensors[n].shape[1:] == first[n].shape[1:] and tensors[n].dtype == first[n].dtype for n in first
        )
        for tensors in batch[1:]
    )


class RunnerSlot(threading.Thread):
    """One runner process and the thread that feeds it batches from the scheduler."""

    def __init__(self, pool: RunnerPool, index: int):
        super().__init__(name=f"runner-slot-{index}", daemon=True)
        self.pool, self.index = pool, index
        self.runner: RunnerProcess | None = None
        self.restarts: dict[str, int] = {}
        self.warm: set[str] = set()

    def run(self) -> None:
        try:
            self.ensure_runner()  # warm: the first request does not wait for a runner to start
        except Exception:
            logger.exception("runner slot %s could not start its runner", self.index)
        while (work := self.pool.scheduler.take(self.runner.tenant if self.runner else None)) is not None:
            sha, requests = work
            try:
                results = self.execute(requests)
            except (
                Exception
            ):  # never lose a caller: whatever broke, they get an answer (the detail is logged)
                logger.exception("runner slot %s", self.index)
                results = [
                    Result(
                        error="The server could not run this request; it can be retried.", server_fault=True
                    )
                ]
                results *= len(requests)
            finally:
                self.pool.scheduler.release(sha)
            self.deliver(requests, results)
            if self.runner is None:  # replaced during the batch: its successor starts now, not on demand
                try:
                    self.ensure_runner()
                except Exception:
                    logger.exception("runner slot %s could not start its runner", self.index)

    @staticmethod
    def deliver(requests: list[Request], results: list[Result]) -> None:
        by_source: dict[int, tuple[Source, list[Request], list[Result]]] = {}
        for request, result in zip(requests, results, strict=True):
            entry = by_source.setdefault(id(request.source), (request.source, [], []))
            entry[1].append(request)
            entry[2].append(result)
        for source, delivered, outcomes in by_source.values():
            try:
                source.deliver(delivered, outcomes)
            except Exception:
                logger.exception("could not deliver %d results", len(delivered))

    def ensure_runner(self) -> RunnerProcess:
        if self.runner is None or not self.runner.alive():
            if self.runner is not None:
                self.runner.stop()
            self.runner = RunnerProcess(f"{self.pool.name}-{self.index}", self.pool.config)
            self.warm = set()
            self.runner.start()
        return self.runner

    def replace(self, cause: str) -> None:
        self.restarts[cause] = self.restarts.get(cause, 0) + 1
        logger.warning("replacing runner %s (%s)", self.index, cause)
        self.pool.observer.runner_replaced(self, cause)
        if self.runner is not None:
            self.runner.stop()
        self.runner = None
        self.warm = set()

    def execute(self, requests: list[Request]) -> list[Result]:
        model = requests[0].model
        runner = self.runner
        if runner is not None and runner.tenant == model.tenant and model.sha256 in runner.open_models:
            path = ""  # the runner holds the model open: no file changes hands (and none is looked for)
        else:
            try:
                path = self.pool.resolve_path(model)
            except FileUnavailable as exc:  # its message is written for callers: it names no path or host
                return [Result(error=str(exc), server_fault=True)] * len(requests)
            except Exception:
                logger.exception(
                    "runner slot %s could not have the file of %s", self.index, model.sha256[:12]
                )
                error = "The model's file could not be had on this worker; the request can be retried."
                return [Result(error=error, server_fault=True)] * len(requests)
        header = {
            "sha256": model.sha256,
            "path": path,
            "format": model.format,
            "size": model.size,
            "inputs": list(model.inputs),
            "outputs": list(model.outputs),
        }
        started_at, started = time.time(), time.monotonic()
        deadline = started + self.pool.config.time_limit
        open_before: set[str] = set()
        try:
            if not path and self.ensure_runner() is not runner:  # it died since: the new one needs the file
                return self.execute(requests)
            runner = self.ensure_runner()
            if runner.tenant not in (None, model.tenant):
                # Another tenant's models were opened in this process: a fresh one, so nothing of theirs is.
                self.replace("tenant")
                runner = self.ensure_runner()
            runner.tenant = model.tenant
            for source in {id(request.source): request.source for request in requests}.values():
                source.started([request for request in requests if request.source is source])
            open_before = set(runner.open_models)
            deadline = (
                time.monotonic() + self.pool.config.time_limit
            )  # a fresh runner's start is not the model's
            results = self._run(runner, header, requests, deadline)
        except RunnerFailed as exc:
            self.replace(exc.restart_cause)
            results = [Result(error=str(exc), server_fault=exc.server_fault)] * len(requests)
        self.warm.add(model.sha256)
        finished_at = time.time()
        compute_ms = (time.monotonic() - started) * 1000 / len(requests)
        results = [
            replace(r, started_at=started_at, finished_at=finished_at, compute_ms=compute_ms) for r in results
        ]
        open_after = set(self.runner.open_models) if self.runner is not None else set()
        self.pool.observer.batch_ran(
            self,
            requests,
            results,
            cache_hit=model.sha256 in open_before if self.runner is not None else None,
            evicted=len(open_before - open_after) if self.runner is not None else 0,
        )
        budget = self.pool.rss_budget_bytes
        if self.runner is not None and budget and self.runner.rss > budget:
            self.replace("memory")
        return results

    def _run(self, runner: RunnerProcess, header: dict, requests: list[Request], deadline) -> list[Result]:
        batch = [request.tensors for request in requests]
        if concatenable(requests[0].model, batch):
            sizes = [next(iter(tensors.values())).shape[0] for tensors in batch]
            joined = {name: np.concatenate([tensors[name] for tensors in batch]) for name in batch[0]}
            reply, outputs = runner.call(header, joined, deadline)
            total = sum(sizes)
            if reply["ok"] and all(o.ndim and o.shape[0] == total for o in outputs.values()):
                cuts = np.cumsum(sizes)[:-1]
                split = {name: np.split(array, cuts) for name, array in outputs.items()}
                return [Result({name: parts[i] for name, parts in split.items()}) for i in range(len(batch))]
            # One bad request must not fail the others: run them one by one.
        results = []
        for tensors in batch:
            reply, outputs = runner.call(header, tensors, deadline)
            results.append(Result(outputs) if reply["ok"] else Result(error=reply["error"]))
        return results


class RunnerPool:
    """`runners` runner processes fed by one scheduler. `resolve_path(model)` gives a model's local file."""

    def __init__(
        self,
        *,
        name: str,
        runners: int,
        model_concurrency: int,
        max_batch: int,
        config: RunnerSettings,
        resolve_path: Callable[[ModelRef], str],
        rss_budget_mb: int = 0,
        observer: PoolObserver | None = None,
    ):
        self.name = name
        self.observer = observer or PoolObserver()
        self.config = config
        self.resolve_path = resolve_path
        self.rss_budget_bytes = rss_budget_mb * 1024 * 1024
        self.scheduler = Scheduler(model_concurrency=model_concurrency, max_batch=max_batch)
        self.slots = [RunnerSlot(self, index) for index in range(runners)]

    def start(self) -> RunnerPool:
        for slot in self.slots:
            slot.start()
        return self

    def stop(self) -> None:
        self.scheduler.stop()
        for slot in self.slots:
            slot.join(timeout=self.config.time_limit + 5)
            if slot.runner is not None:
                slot.runner.stop()

    def runner_pids(self) -> list[int]:
        return [slot.runner.pid for slot in self.slots if slot.runner is not None and slot.runner.alive()]

    def run(
        self,
        model: ModelRef,
        tensors: dict[str, np.ndarray],
        *,
        request_id: str = "",
        header: dict | None = None,
    ) -> Result:
        """Run one request and wait for its result (the job path and tests)."""
        waiter = Waiter()
        self.scheduler.put(
            Request(id=request_id, model=model, tensors=tensors, source=waiter, header=header or {})
        )
        return waiter.wait()


def kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
