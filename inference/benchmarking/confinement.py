"""What kernel confinement costs a runner: the time to start one, and a call's round trip, with the sandbox on
(bubblewrap, seccomp, its own user) and off, on the same model, measured straight on runner processes (no
web, no queue) so that nothing else is in the figures."""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from inference.runners.pool import RunnerProcess, RunnerSettings
from marketplace.sandbox.confine import Confinement


@dataclass
class ConfinementRow:
    mode: str
    start_ms: float  # median time from spawn to the runner's ready frame
    first_call_ms: float  # the model handed over and opened, then run once
    call_p50_ms: float
    call_p99_ms: float


def measure_confinement(
    *, data: bytes, input_name: str, sample: np.ndarray, user: str, starts: int = 5, calls: int = 2000
) -> list[ConfinementRow]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="modelport-confinement-") as folder:
        os.chmod(folder, 0o755)  # noqa: S103 - the model file is handed over by descriptor, and read-only
        path = Path(folder) / "model.onnx"
        path.write_bytes(data)
        path.chmod(0o444)
        header = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "path": str(path),
            "format": "onnx",
            "size": len(data),
            "inputs": [input_name],
            "outputs": [],
        }
        for sandbox in (False, True):
            confinement = (
                Confinement(sandbox=True, user=user) if sandbox else Confinement(measuring_baseline=True)
            )
            config = RunnerSettings(threads=1, confinement=confinement)
            start_times = []
            for index in range(starts):
                runner = RunnerProcess(f"confinement-{os.getpid()}-{index}", config)
                started = time.perf_counter()
                runner.start()
                start_times.append((time.perf_counter() - started) * 1000)
                runner.stop()
            runner = RunnerProcess(f"confinement-{os.getpid()}", config)
            runner.start()
            try:
                started = time.perf_counter()
                reply, _ = runner.call(header, {input_name: sample}, time.monotonic() + 60)
                first_call = (time.perf_counter() - started) * 1000
                if not reply["ok"]:
                    raise RuntimeError(f"the benchmark model failed in a runner: {reply['error']}")
                latencies = []
                for _ in range(calls):
                    started = time.perf_counter()
                    runner.call(header, {input_name: sample}, time.monotonic() + 60)
                    latencies.append((time.perf_counter() - started) * 1000)
            finally:
                runner.stop()
            latencies.sort()
            rows.append(
                ConfinementRow(
                    mode="bubblewrap + seccomp, own user" if sandbox else "unconfined, the worker's user",
                    start_ms=statistics.median(start_times),
                    first_call_ms=first_call,
                    call_p50_ms=latencies[len(latencies) // 2],
                    call_p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
                )
            )
    return rows


def format_confinement(rows: list[ConfinementRow], model: str) -> list[str]:
    lines = [
        f"confinement: a runner's start and a call on {model}, straight to the runner (no web, no queue)",
        f"  {'mode':<36} {'start ms':>9} {'first call ms':>14} {'call p50 ms':>12} {'call p99 ms':>12}",
    ]
    for row in rows:
        lines.append(
            f"  {row.mode:<36} {row.start_ms:>9.1f} {row.first_call_ms:>14.1f} {row.call_p50_ms:>12.3f} "
            f"{row.call_p99_ms:>12.3f}"
        )
    if len(rows) == 2:
        off, on = rows
        lines.append(
            f"  cost of confinement: start +{on.start_ms - off.start_ms:.1f} ms, "
            f"call p50 +{(on.call_p50_ms - off.call_p50_ms) * 1000:.0f} µs"
        )
    return lines
