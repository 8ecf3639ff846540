"""Run `marketplace/sandbox/optimize_file.py` on a model file: quantize it and measure the result, in a child
process under the upload check's limits (`validation.run_sandboxed`); and say in one sentence what it gained
and what it cost."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from .models import Task
from .sandbox import optimize_file
from .sandbox.validation import run_sandboxed

OPTIMIZE_SCRIPT = Path(optimize_file.__file__).resolve()
METHODS = optimize_file.METHODS
CLASSIFICATION_TASKS = {Task.IMAGE_CLASSIFICATION, Task.TABULAR_CLASSIFICATION, Task.TEXT_CLASSIFICATION}
# The quantized file is written by the child: room for it, its scratch copies (the quantizer saves the model
# with shapes inferred) and calibration data, relative to the original's size.
OUTPUT_ALLOWANCE_MB = 16


@dataclass
class Outcome:
    ok: bool
    reason: str = ""
    # The quantized file, in the working folder the caller gave.
    path: Path | None = None
    measured: dict = field(default_factory=dict)


def run_optimization(
    path: str | os.PathLike,
    *,
    method: str,
    signature: dict,
    task: str,
    example=None,
    tokenizer: str | os.PathLike | None = None,
    workdir: str,
) -> Outcome:
    """Quantize the model at `path` with `method` into `workdir` and measure it; never raises for a bad file.

    The child runs under the upload check's memory and CPU-time limits; its wall time is that limit too, with
    about a third of it spent timing the two models.
    """
    timeout = settings.MODEL_VALIDATION_TIMEOUT_SECONDS
    size_mb = math.ceil(os.path.getsize(path) / (1 << 20))
    request = {
        "path": str(Path(path).resolve()),
        "method": method,
        "signature": signature,
        "example": example,
        "tokenizer": str(Path(tokenizer).resolve()) if tokenizer else None,
        "classification": task in CLASSIFICATION_TASKS,
        "inputs": settings.MODEL_OPTIMIZATION_INPUTS,
        "timing_budget_seconds": timeout / 6,
    }
    request_path = Path(workdir) / "request.json"
    request_path.write_text(json.dumps(request), encoding="utf-8")
    try:
        result = run_sandboxed(
            [str(OPTIMIZE_SCRIPT), str(request_path)],
            workdir=workdir,
            timeout=timeout,
            file_size_mb=2 * size_mb + OUTPUT_ALLOWANCE_MB,
            read_only=tuple(path for path in (request["path"], request["tokenizer"]) if path),
        )
    except subprocess.TimeoutExpired:
        return Outcome(ok=False, reason=f"Optimization took longer than {timeout} s and was stopped.")
    answer = result.verdict
    if answer is not None and "ok" in answer:
        if not answer.pop("ok"):
            return Outcome(ok=False, reason=str(answer.get("reason", "Optimization failed.")))
        output = Path(workdir) / optimize_file.OUTPUT_NAME
        if not output.is_file() or output.is_symlink():
            return Outcome(ok=False, reason="Optimization wrote no model file.")
        answer.pop("output", None)
        return Outcome(ok=True, path=output, measured=answer)
    if result.signal in (signal.SIGKILL, signal.SIGXCPU):
        return Outcome(ok=False, reason="Optimization ran out of its CPU-time limit.")
    if result.signal == signal.SIGXFSZ:
        return Outcome(ok=False, reason="Optimization wrote more than its file-size limit.")
    tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if "alloc" in tail[0].lower() or "memory" in tail[0].lower() or result.signal == signal.SIGABRT:
        return Outcome(ok=False, reason="Optimizing the model needs more memory than optimization allows.")
    return Outcome(ok=False, reason=f"The model crashed the optimizer (exit status {result.returncode}).")


def optimization_record(*, method: str, size_before: int, size_after: int, measured: dict) -> dict:
    """What a derived version keeps: the contract's fields first, then how they were measured."""
    return {
        "method": method,
        "size_before": size_before,
        "size_after": size_after,
        "speedup": measured["speedup"],
        "max_abs_diff": measured["max_abs_diff"],
        "agreement": measured["agreement"],
        "inputs": measured["inputs"] if measured["agreement"] is not None else measured["rows"],
        "non_finite_mismatches": measured["non_finite_mismatches"],
        "repetitions": measured["repetitions"],
        "runs": measured["runs"],
        "median_seconds": measured["median_seconds"],
        "min_agreement": settings.MODEL_OPTIMIZATION_MIN_AGREEMENT,
    }


def is_low_agreement(optimization: dict) -> bool:
    agreement = optimization.get("agreement")
    return agreement is not None and agreement < optimization.get(
        "min_agreement", settings.MODEL_OPTIMIZATION_MIN_AGREEMENT
    )


def ratio(value: float) -> str:
    return f"{value:.1f}×" if value < 10 else f"{value:.0f}×"


def optimization_summary(optimization: dict) -> str:
    """The plain sentence on the model page, e.g. "4.1× smaller, 1.8× faster here, top label unchanged on
    99.2 % of 512 inputs"."""
    if not optimization.get("size_after"):
        return ""
    parts = []
    before, after = optimization["size_before"], optimization["size_after"]
    parts.append(f"{ratio(before / after)} smaller" if after <= before else f"{ratio(after / before)} larger")
    speedup = optimization.get("speedup")
    if speedup:
        parts.append(f"{ratio(speedup)} faster here" if speedup >= 1 else f"{ratio(1 / speedup)} slower here")
    agreement, inputs = optimization.get("agreement"), optimization.get("inputs")
    if agreement is not None:
        parts.append(f"top label unchanged on {agreement * 100:.1f} % of {inputs} inputs")
    else:
        parts.append(f"outputs within {optimization.get('max_abs_diff', 0):.3g} on {inputs} inputs")
    return ", ".join(parts)
