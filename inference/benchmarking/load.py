"""The one load client every path is measured with, and the in-process ONNX Runtime baseline.

One caller per thread (for HTTP a keep-alive `http.client` connection; gRPC's is in `grpc_load.py`); each
thread warms up, then all start together and share a fixed number of requests. Latency is per request; the
rate is successful requests over the run's wall time.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


@dataclass
class Measurement:
    p50: float  # ms
    p99: float  # ms
    rate: float  # successful requests per second
    count: int = 0
    errors: int = 0
    first_error: str = ""

    @property
    def measured(self) -> bool:
        return self.count > 0


def summarize(latencies: list[float], elapsed: float, errors: int = 0, first_error: str = "") -> Measurement:
    """`latencies` in seconds; p50 and p99 in milliseconds."""
    if not latencies:
        return Measurement(float("nan"), float("nan"), 0.0, 0, errors, first_error)
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return Measurement(
        p50=statistics.median(ordered) * 1000,
        p99=p99 * 1000,
        rate=len(ordered) / elapsed if elapsed > 0 else 0.0,
        count=len(ordered),
        errors=errors,
        first_error=first_error,
    )


class Caller(Protocol):
    """One thread's client: `call()` makes one request and returns an error text, or None if it succeeded."""

    def call(self) -> str | None: ...

    def close(self) -> None: ...


class HttpCaller:
    """A keep-alive connection that POSTs `target`; a broken connection is replaced for the next call."""

    def __init__(self, target: Target, timeout: float):
        self.target, self.timeout = target, timeout
        self.connection = target.connect(timeout)

    def call(self) -> str | None:
        target = self.target
        try:
            self.connection.request("POST", target.path, body=target.body, headers=target.headers)
            response = self.connection.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.connection.close()
            self.connection = target.connect(self.timeout)
            return f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return f"{response.status}: {content[:200].decode(errors='replace')}"
        return None

    def close(self) -> None:
        self.connection.close()


def measure_calls(
    open_caller: Callable[[], Caller],
    *,
    requests: int,
    concurrency: int,
    warmup: int = 100,
    max_seconds: float = 60.0,
) -> Measurement:
    """`requests` calls shared by `concurrency` threads, each with its own caller, after a warm-up (stopping
    early after `max_seconds`). Every protocol's rows are measured by this one loop."""
    remaining = [requests]
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(concurrency + 1)
    deadline = [float("inf")]

    def take() -> bool:
        with lock:
            if remaining[0] <= 0 or time.perf_counter() > deadline[0]:
                return False
            remaining[0] -= 1
            return True

    def client() -> None:
        warm_until = time.perf_counter() + min(10.0, max_seconds)  # a stalled server must not stall warm-up
        try:
            caller = open_caller()
            for _ in range(max(2, warmup // concurrency) if warmup else 0):
                caller.call()
                if time.perf_counter() > warm_until:
                    break
        finally:
            start.wait()
        mine, my_errors = [], []
        while take():
            began = time.perf_counter()
            error = caller.call()
            if error is None:
                mine.append(time.perf_counter() - began)
            else:
                my_errors.append(error)
        caller.close()
        with lock:
            latencies.extend(mine)
            errors.extend(my_errors)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    deadline[0] = began + max_seconds
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    return summarize(latencies, elapsed, len(errors), errors[0] if errors else "")


def measure_http(
    target: Target,
    *,
    requests: int,
    concurrency: int,
    warmup: int = 100,
    max_seconds: float = 60.0,
    timeout: float = 70.0,
) -> Measurement:
    """POST `target` `requests` times from `concurrency` threads (stopping early after `max_seconds`)."""
    return measure_calls(
        lambda: HttpCaller(target, timeout),
        requests=requests,
        concurrency=concurrency,
        warmup=warmup,
        max_seconds=max_seconds,
    )


def measure_onnxruntime(model: bytes, feed: dict, *, requests: int, warmup: int = 50) -> Measurement:
    """Raw ONNX Runtime in this process, one thread (intra- and inter-op), one call after another."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, feed)
    latencies = []
    for _ in range(requests):
        began = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - began)
    return summarize(latencies, sum(latencies))
