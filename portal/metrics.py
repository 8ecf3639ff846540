"""Every Prometheus metric of Modelport, defined once, and what `/metrics` serves.

prometheus_client runs in multiprocess mode: each process (gunicorn's workers, the Celery worker's supervisor
and pool processes, the gRPC server) writes its values to memory-mapped files in `settings.METRICS_DIR`, and
`/metrics` adds them up. Writing one is a few memory stores, cheap enough for the predict path. Runner
processes never record anything: they are untrusted and import neither this nor Django; their supervisor
records what it learns from them.

Label cardinality is bounded: a process gives a model its own label for the first `METRICS_MODEL_LABELS_MAX`
models it sees and counts every other model as `other`, so a large catalog makes a bounded number of series.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import os
import re
import shutil
import threading
from pathlib import Path

from django.conf import settings

# The folder must be in the environment before prometheus_client is imported (settings puts it there).
_ = settings.METRICS_DIR
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)


class _ProcessId:
    """This process's id, read again only after a fork. prometheus_client checks it on every write to tell
    whether it must open its files anew, and `os.getpid()` is a system call: at one per bucket, sum and count
    of every histogram observed it was 5% of the supervisor's CPU on the predict path."""

    def __init__(self):
        self.pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self.pid = os.getpid()

    def __call__(self) -> int:
        return self.pid


# Before the first metric is made: every value of this process shares the files this class opens.
values.ValueClass = values.MultiProcessValue(process_identifier=_ProcessId())

OTHER = "other"
UNKNOWN = "unknown"  # a request that never got as far as a model the caller may see

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

# --- requests (web processes and the gRPC server) -----------------------------------------------------------
requests_total = Counter(
    "modelport_requests",
    "Prediction requests by model, protocol (v1, v2, grpc) and outcome.",
    ["model", "protocol", "outcome"],
)
request_seconds = Histogram(
    "modelport_request_duration_seconds",
    "Prediction requests' total time in the server, from the request to the answer.",
    ["model", "protocol"],
    buckets=LATENCY_BUCKETS,
)
quota_refusals_total = Counter(
    "modelport_quota_refusals", "Prediction requests refused by a quota or rate limit.", ["limit"]
)

# --- runners (the supervisor in each Celery worker) ---------------------------------------------------------
queue_seconds = Histogram(
    "modelport_queue_duration_seconds",
    "Time predictions waited before a runner started them.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
compute_seconds = Histogram(
    "modelport_compute_duration_seconds",
    "Time a runner spent on a prediction (its share of the batch it ran in).",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
batch_size = Histogram(
    "modelport_batch_size", "Requests run together in one call of a model.", ["model"], buckets=BATCH_BUCKETS
)
time_to_first_token = Histogram(
    "modelport_time_to_first_token_seconds",
    "Chat and completion calls: from the request to the first piece of the answer (prompt counted, admitted, "
    "evaluated).",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
tokens_per_second = Histogram(
    "modelport_generation_tokens_per_second",
    "Chat and completion calls: the answer's tokens after the first, over the time after the first.",
    ["model"],
    buckets=(1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 1000),
)
generated_tokens_total = Counter(
    "modelport_tokens_total",
    "Tokens of chat and completion calls, by kind (prompt, completion).",
    ["model", "kind"],
)
queue_depth = Gauge(
    "modelport_queue_depth",
    "Requests waiting in a model's queue (as last seen by a live worker).",
    ["model"],
    multiprocess_mode="livemax",
)
runners = Gauge("modelport_runners", "Live runner processes.", multiprocess_mode="livesum")
runner_resident_bytes = Gauge(
    "modelport_runner_resident_bytes",
    "Resident memory of each runner process, by worker process (pid) and runner slot.",
    ["slot"],
    multiprocess_mode="liveall",
)
runner_restarts_total = Counter(
    "modelport_runner_restarts", "Runner processes replaced, by cause (memory, time, crash).", ["cause"]
)
session_cache_hits_total = Counter(
    "modelport_session_cache_hits", "Calls that found their model already open in the runner."
)
session_cache_misses_total = Counter(
    "modelport_session_cache_misses", "Calls whose runner had to open the model first."
)
session_cache_evictions_total = Counter(
    "modelport_session_cache_evictions", "Open models a runner closed to stay in its memory budget."
)

# --- the catalog --------------------------------------------------------------------------------------------
validations_total = Counter(
    "modelport_validations", "Uploaded model versions validated, by result (ready, rejected).", ["result"]
)
uploads_total = Counter("modelport_uploads", "Model files uploaded (new models and new versions).")
upload_bytes_total = Counter("modelport_upload_bytes", "Bytes of model files uploaded.")


# --- bounded model labels -----------------------------------------------------------------------------------
_labelled: set[str] = set()
_labelled_lock = threading.Lock()


def model_label(slug: str | None) -> str:
    """`slug` for the first METRICS_MODEL_LABELS_MAX models this process sees, `other` for the rest."""
    if not slug:
        return UNKNOWN
    if slug in _labelled:
        return slug
    with _labelled_lock:
        if len(_labelled) < settings.METRICS_MODEL_LABELS_MAX:
            _labelled.add(slug)
            return slug
    return OTHER


# --- the files ----------------------------------------------------------------------------------------------
_PID_IN_NAME = re.compile(r"_(\d+)\.db$")


def metrics_dir_wipe() -> None:
    """Empty the folder: for whoever starts a whole deployment (`make run`, the test fixtures)."""
    folder = Path(settings.METRICS_DIR)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)


def metrics_dir_prune() -> None:
    """Remove the files of processes that are gone (a previous run's): for each process as it starts.

    The files of live processes stay, so one service restarting does not zero the others' counters."""
    folder = Path(settings.METRICS_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    for path in glob.glob(str(folder / "*.db")):
        match = _PID_IN_NAME.search(path)
        if match and not _process_alive(int(match.group(1))):
            try:
                os.remove(path)
            except FileNotFoundError:
                pass


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_exited(pid: int) -> None:
    """A process of the deployment ended: its live gauges (runners, memory) no longer count."""
    multiprocess.mark_process_dead(pid, str(settings.METRICS_DIR))


# --- /metrics -----------------------------------------------------------------------------------------------


def metrics_allowed(*, authorization: str, client: str | None) -> bool:
    """With METRICS_TOKEN: only `Bearer <token>`. Without: only loopback clients."""
    token = settings.METRICS_TOKEN
    if token:
        scheme, _, given = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())
    try:
        return client is not None and ipaddress.ip_address(client).is_loopback
    except ValueError:
        return False


def metrics_text() -> tuple[bytes, str]:
    """Every process's metrics, added up: (body, content type)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.METRICS_DIR))
    return generate_latest(registry), CONTENT_TYPE_LATEST


def histogram_medians(name: str) -> dict[str, tuple[int, float]]:
    """Per model: (observations, median) of the histogram `name` over every process of the deployment. The
    median is the upper bound of the bucket that holds it (inf past the last finite bucket)."""
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(settings.METRICS_DIR))
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in registry.collect():
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets.setdefault(sample.labels["model"], []).append((bound, sample.value))
    medians = {}
    for model, cumulative in buckets.items():
        cumulative.sort()
        total = cumulative[-1][1] if cumulative else 0
        if total:
            median = next(bound for bound, count in cumulative if count >= total / 2)
            medians[model] = (int(total), median)
    return medians
