"""A runner pool's scheduler: which calls a free runner takes next, fair across models and tenants.

What the pool's runners run is described here too (`ModelRef`, `Request`, `Result`) and where calls come
from and their answers go (`Source`): the scheduler knows nothing of runner processes, and the pool
(`inference.runners.pool`) nothing of the order calls are taken in.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

# How long the model first in line may wait while a runner takes its own tenant's work instead: about what
# replacing the runner for another tenant costs.
AFFINITY_WAIT = 0.5


@dataclass(frozen=True)
class ModelRef:
    """What a runner needs to open a model file (resolved to a local path by the trusted side)."""

    sha256: str
    format: str
    file_name: str
    size: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    batchable: bool  # every input's first dimension is dynamic
    file_key: str = ""  # its data key's envelope when stored encrypted (decrypted by the trusted side)
    # Whose model it is (the owner's name): a runner serves one tenant's models until it is replaced, so no
    # model ever shares a process, its memory or its open files with another tenant's.
    tenant: str = ""


@dataclass
class Request:
    id: str
    model: ModelRef
    tensors: dict[str, np.ndarray]
    source: Source
    header: dict = field(default_factory=dict)


@dataclass
class Result:
    outputs: dict[str, np.ndarray] | None = None
    error: str = ""
    server_fault: bool = False  # the server's limit or failure, not the request's: 503 where it matters
    started_at: float = 0.0
    finished_at: float = 0.0
    compute_ms: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.outputs is not None


class Source:
    """Where requests come from and where their results go."""

    def fetch(self, sha256: str, limit: int) -> list[Request]:
        return []

    def started(self, requests: list[Request]) -> None:
        """A runner took these requests (its next call runs them)."""

    def deliver(self, requests: list[Request], results: list[Result]) -> None:
        raise NotImplementedError


class Scheduler:
    """Which model a free runner takes next: round-robin over models with work, each under its cap, preferring
    the runner's own tenant (a runner that takes another tenant's model is replaced first, which costs a
    start) unless the model first in line has waited AFFINITY_WAIT already.

    Work waits where it came from: in a local deque (jobs), or in its Redis queue, which a `Source.fetch`
    drains only when a runner is free for that model, so a busy model's backlog stays shareable and visible.
    """

    def __init__(self, *, model_concurrency: int, max_batch: int):
        self.cap = model_concurrency
        self.max_batch = max_batch
        self.cond = threading.Condition()
        self.local: dict[str, deque[Request]] = {}
        self.remote: dict[str, tuple[Source, int]] = {}  # sha256 -> (source, number of its last wake-up)
        self.wakeups = 0
        self.order: OrderedDict[str, None] = OrderedDict()
        self.busy: dict[str, int] = {}
        self.tenants: dict[str, str] = {}  # sha256 -> its tenant, as its requests say
        self.waiting_since: dict[str, float] = {}  # sha256 -> when it came (back) to the line
        self.stopped = False

    def put(self, request: Request) -> None:
        with self.cond:
            self.local.setdefault(request.model.sha256, deque()).append(request)
            self.tenants[request.model.sha256] = request.model.tenant
            self._line_up(request.model.sha256)
            self.cond.notify()

    def withdraw(self, sha: str, request_id: str) -> Request | None:
        """Take back a request no runner has taken yet (its caller is gone); None if a runner has it."""
        with self.cond:
            queue = self.local.get(sha)
            for request in queue or ():
                if request.id == request_id:
                    queue.remove(request)
                    if not queue:
                        del self.local[sha]
                        if sha not in self.remote:
                            self._leave(sha)
                    return request
            return None

    def wake(self, source: Source, shas) -> None:
        """`shas`: one per request queued. As many runners wake as there are requests, not all of them: idle
        runners racing to fetch one request each cost the call that won a quarter of a millisecond."""
        with self.cond:
            for sha in shas:
                # A counter that never goes back: a wake-up after the entry was dropped must not reuse the
                # number a runner still fetching saw, or that runner would drop the new wake-up too.
                self.wakeups += 1
                self.remote[sha] = (source, self.wakeups)
                self._line_up(sha)
            self.cond.notify(len(shas))

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def pending_remote(self) -> dict[Source, list[str]]:
        """The models woken from a remote source and not drained yet, by source."""
        with self.cond:
            pending: dict[Source, list[str]] = {}
            for sha, (source, _) in self.remote.items():
                pending.setdefault(source, []).append(sha)
            return pending

    def _line_up(self, sha: str) -> None:
        if sha not in self.order:
            self.order[sha] = None
            self.waiting_since[sha] = time.monotonic()

    def _leave(self, sha: str) -> None:
        self.order.pop(sha, None)
        self.waiting_since.pop(sha, None)

    def _pick(self, tenant: str | None) -> str | None:
        first = None
        for sha in self.order:
            if self.busy.get(sha, 0) >= self.cap:
                continue
            if first is None:
                first = sha
            if tenant is None or self.tenants.get(sha) == tenant:
                waited = time.monotonic() - self.waiting_since.get(first, time.monotonic())
                return sha if sha == first or waited < AFFINITY_WAIT else first
        return first

    def take(self, tenant: str | None = None) -> tuple[str, list[Request]] | None:
        """The next batch for a free runner (blocks); None once stopped. Call `release(sha)` after it.
        `tenant`: whose models the runner has open, if any."""
        while True:
            with self.cond:
                while (sha := self._pick(tenant)) is None:
                    if self.stopped:
                        return None
                    self.cond.wait(1)
                if self.stopped:
                    return None
                self.busy[sha] = self.busy.get(sha, 0) + 1
                self.order.move_to_end(sha)
                self.waiting_since[sha] = time.monotonic()
                queue = self.local.get(sha)
                if queue:
                    batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                    if not queue:
                        del self.local[sha]
                        if sha not in self.remote:
                            self._leave(sha)
                    return sha, batch
                source, generation = self.remote[sha]
            try:
                batch = source.fetch(sha, self.max_batch)
            except Exception:
                logger.exception("could not fetch queued requests for %s", sha[:12])
                batch = []
            if batch:
                with self.cond:
                    self.tenants[sha] = batch[0].model.tenant
                return sha, batch
            with self.cond:
                self._unbusy(sha)
                # Emptied, unless a wake-up came in meanwhile: its request may have arrived after our fetch.
                if self.remote.get(sha, (None, -1))[1] == generation:
                    del self.remote[sha]
                    if sha not in self.local:
                        self._leave(sha)

    def release(self, sha: str) -> None:
        with self.cond:
            self._unbusy(sha)

    def _unbusy(self, sha: str) -> None:
        capped = self.busy[sha] >= self.cap
        self.busy[sha] -= 1
        if not self.busy[sha]:
            del self.busy[sha]
        if capped:  # a runner may have waited for this model to fall under its cap
            self.cond.notify()

    def waiting(self, sha: str) -> int:
        """How many requests for the model wait in the local queue (the link's and jobs')."""
        with self.cond:
            return len(self.local.get(sha, ()))

    def waiting_models(self) -> dict[str, tuple[str, int]]:
        """Models with requests in the local queue: sha256 -> (the first request's model, how many wait)."""
        with self.cond:
            return {sha: (queue[0].header.get("model", ""), len(queue)) for sha, queue in self.local.items()}

    def depths(self) -> dict[str, int]:
        with self.cond:
            return {sha: len(queue) for sha, queue in self.local.items()}


class Waiter(Source):
    """One request's caller, waiting for its result."""

    def __init__(self):
        self.done = threading.Event()
        self.result: Result | None = None

    def deliver(self, requests: list[Request], results: list[Result]) -> None:
        self.result = results[0]
        self.done.set()

    def wait(self) -> Result:
        self.done.wait()
        return self.result
