"""The one load client every HTTP path is measured with, and the in-process ONNX Runtime baseline.

Keep-alive `http.client` connections, one per thread; each thread warms up, then all start together and share
a fixed number of requests. Latency is per request; the rate is successful requests over the run's wall time.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from dataclasses import dataclass, field


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

    def post(connection) -> tuple[http.client.HTTPConnection, str | None]:
        """One request; returns the connection to go on with and an error text (None when 200)."""
        try:
            connection.request("POST", target.path, body=target.body, headers=target.headers)
            response = connection.getresponse()
            content = response.read()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            return target.connect(timeout), f"{type(exc).__name__}: {exc}"
        if response.status != 200:
            return connection, f"{response.status}: {content[:200].decode(errors='replace')}"
        return connection, None

    def client() -> None:
        connection = target.connect(timeout)
        warm_until = time.perf_counter() + min(10.0, max_seconds)  # a stalled server must not stall warm-up
        try:
            for _ in range(max(2, warmup // concurrency) if warmup else 0):
                connection, _error = post(connection)
                if time.perf_counter() > warm_until:
                    break
        finally:
            start.wait()
        mine, my_errors = [], []
        while take():
            began = time.perf_counter()
            connection, error = post(connection)
            if error is None:
                mine.append(time.perf_counter() - began)
            else:
                my_errors.append(error)
        connection.close()
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
