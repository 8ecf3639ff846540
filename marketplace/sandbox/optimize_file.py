"""Quantize an ONNX model and measure what it gains and costs, inside a throw-away child process.

Run as a script (`python -I optimize_file.py request.json`) by `marketplace.optimization`, under the same
`confine.py` limits and secret-free environment as the upload check (`inspect_file.py`): the input is
an uploaded file. Nothing here imports Django. The quantized model is written into the working folder (the
child's cwd) as OUTPUT_NAME; the answer is one JSON line on the verdict
descriptor (`verdict.py`).

The measurement is one run on this machine: the original and the quantized model each in a fresh session,
fed the same inputs (the version's example and inputs generated from it, a fixed seed), timed over several
repetitions; the speed-up is the ratio of the median times.
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass

OUTPUT_NAME = "optimized.onnx"
METHODS = ("dynamic-int8", "static-int8")
# Rows per generated batch (models with a dynamic batch dimension), and feeds for models without one.
BATCH_ROWS = 64
UNBATCHED_FEEDS = 64
SEED = 0
MIN_REPETITIONS, MAX_REPETITIONS = 3, 7
MIN_TIMING_SECONDS = 0.05
MAX_ROUNDS = 1000


class Failed(Exception):
    """The model cannot be optimized or measured; the message says why (shown on the version)."""


def sibling(name: str):
    if not __package__:
        # Run as a script under `python -I`, which puts no folder on sys.path. The project's root goes last
        # (never this folder: its `selectors.py` would shadow the standard library's).
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if root not in sys.path:
            sys.path.append(root)
    return importlib.import_module(name if name.startswith("marketplace.") else f"marketplace.sandbox.{name}")


# --- inputs -------------------------------------------------------------------------------------------------


def is_batched(inputs: list[dict]) -> bool:
    return all(spec["shape"] and spec["shape"][0] == -1 for spec in inputs)


def generated_array(spec: dict, rows: int | None, example, rng):
    """Values for one input: around the example's (noise of a tenth of its range, within it, or uniform over
    it; integers drawn from its values), or without an example uniform in [-1, 1] (integers in 0..5)."""
    import numpy as np

    trials = sibling("trials")
    dtype = np.dtype(trials.OIP_TO_NUMPY[spec["datatype"]])
    if example is not None:
        tail = list(example.shape[1:]) if rows is not None else list(example.shape)
    else:
        dims = spec["shape"][1:] if rows is not None else spec["shape"]
        tail = [1 if d == -1 else d for d in dims]
    shape = [rows, *tail] if rows is not None else tail
    if dtype.kind == "O":
        values = example.ravel() if example is not None and example.size else np.array([b"a"], dtype=object)
        return rng.choice(values, size=shape)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        if example is not None and example.size:
            return rng.choice(example.ravel(), size=shape).astype(dtype)
        return rng.integers(0, 6, size=shape).astype(dtype)
    if example is None or not example.size:
        return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    finite = example[np.isfinite(example)].astype(np.float64)
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 1.0)
    if high <= low:
        low, high = low - 1.0, high + 1.0
    if rng.random() < 0.5:
        base = example if rows is None else example[rng.integers(0, example.shape[0], size=rows)]
        noisy = base + rng.normal(0.0, (high - low) / 10, size=shape)
        return np.clip(noisy, low, high).astype(dtype)
    return rng.uniform(low, high, size=shape).astype(dtype)


def text_feeds(inputs: list[dict], request: dict, rng, count: int) -> list[dict]:
    """Text models: the example's texts and variations of them, through the version's tokenizer."""
    tokenization = sibling("marketplace.tokenization")
    with open(request["tokenizer"], encoding="utf-8") as handle:
        tokenizer = tokenization.tokenizer_load(handle.read())
    example = request.get("example")
    seeds = tokenization.texts_of(example) if isinstance(example, (str, list)) else [tokenization.SAMPLE_TEXT]
    words = " ".join(seeds).split()
    texts = list(seeds)
    while len(texts) < count:
        # Variations of the given texts: about a fifth of the words dropped, one word from any of them added.
        base = str(seeds[int(rng.integers(len(seeds)))]).split()
        kept = [word for word in base if rng.random() > 0.2] or base
        kept.insert(int(rng.integers(len(kept) + 1)), str(rng.choice(words)))
        texts.append(" ".join(kept))
    try:
        plan = tokenization.text_plan(tokenizer, inputs)
        tokenizer = tokenization.tokenizer_configure(tokenizer, plan)
        step = plan.fixed_batch or min(BATCH_ROWS, 16)
        return [
            tokenization.encode_texts(tokenizer, plan, texts[start : start + step])[0]
            for start in range(0, len(texts) - step + 1, step)
        ]
    except tokenization.TextError as exc:
        raise Failed(f"The model cannot take text from its tokenizer: {exc}.") from exc


def measurement_feeds(inputs: list[dict], request: dict, count: int) -> list[dict]:
    """The example (when there is one) first, then generated feeds: about `count` inputs in all."""
    import numpy as np

    trials = sibling("trials")
    rng = np.random.default_rng(SEED)
    example = request.get("example")
    if request.get("tokenizer") and not isinstance(example, dict):
        if not (isinstance(example, list) and example and isinstance(example[0], dict)):
            return text_feeds(inputs, request, rng, count)
    feeds = []
    arrays = None
    if example is not None:
        try:
            arrays = trials.example_arrays(example, inputs)
        except trials.ExampleError as exc:
            raise Failed(f"The version's example does not fit the model: {exc}.") from exc
        feeds.append(arrays)
    if is_batched(inputs):
        for _ in range(max(1, count // BATCH_ROWS)):
            feeds.append(
                {
                    spec["name"]: generated_array(
                        spec, BATCH_ROWS, arrays[spec["name"]] if arrays else None, rng
                    )
                    for spec in inputs
                }
            )
    else:
        for _ in range(min(count, UNBATCHED_FEEDS)):
            feeds.append(
                {
                    spec["name"]: generated_array(spec, None, arrays[spec["name"]] if arrays else None, rng)
                    for spec in inputs
                }
            )
    return feeds


# --- quantization -------------------------------------------------------------------------------------------


def load_checked(path: str):
    """The model, re-checked as the upload check does: no external data (which would be read from paths the
    file names), known operator domains, tensors that hold what they claim."""
    import onnx

    inspect_file = sibling("inspect_file")
    try:
        model = onnx.load(path, load_external_data=False)
        inspect_file.check_onnx_structure(model)
    except inspect_file.Rejected as exc:
        raise Failed(str(exc)) from exc
    except Exception as exc:
        raise Failed(f"The file does not load as ONNX: {exc}") from exc
    return model


def calibration_reader(feeds: list[dict]):
    """onnxruntime's CalibrationDataReader over the measurement feeds (static quantization)."""
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        def __init__(self):
            self.remaining = iter(feeds)

        def get_next(self):
            return next(self.remaining, None)

    return FeedReader()


def quantize(model, method: str, output: str, feeds: list[dict]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic, quantize_static

    if method == "dynamic-int8":
        quantize_dynamic(model, output, weight_type=QuantType.QInt8)
    elif method == "static-int8":
        quantize_static(
            model,
            output,
            calibration_reader(feeds),
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
    else:
        raise Failed(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")


# --- measurement --------------------------------------------------------------------------------------------


def new_session(path: str):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def resource_failure(exc: Exception) -> bool:
    return isinstance(exc, MemoryError) or sibling("trials").is_resource_failure(str(exc))


def reference_outputs(session, feeds: list[dict], budget: float) -> tuple[list[dict], list[list], float]:
    """The feeds the original runs on (others are dropped: generated values may not suit every model), its
    outputs on them, and the seconds that took. A large model stops taking feeds once `budget` seconds are
    spent (with two at least), so that calibrating, comparing and timing fit into the time limit too."""
    trials = sibling("trials")
    kept, outputs, errors = [], [], []
    started = time.perf_counter()
    for feed in feeds:
        if len(kept) >= 2 and time.perf_counter() - started > budget:
            break
        try:
            outputs.append(session.run(None, feed))
        except Exception as exc:
            if resource_failure(exc):
                raise Failed(f"The model needs more memory than optimization allows: {exc}") from exc
            errors.append(trials.first_line(exc))
            continue
        kept.append(feed)
    if not kept:
        raise Failed(
            f"The original model ran on none of the measurement inputs ({errors[0]}): give the version an "
            "`example` to measure it on."
        )
    return kept, outputs, time.perf_counter() - started


def candidate_outputs(session, feeds: list[dict]) -> tuple[list[list], float]:
    trials = sibling("trials")
    outputs = []
    started = time.perf_counter()
    for feed in feeds:
        try:
            outputs.append(session.run(None, feed))
        except Exception as exc:
            if resource_failure(exc):
                raise Failed(f"The quantized model needs more memory than allowed: {exc}") from exc
            raise Failed(
                f"The quantized model fails on an input the original runs: {trials.first_line(exc)}"
            ) from exc
    return outputs, time.perf_counter() - started


def timed(session, feeds: list[dict], rounds: int) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        for feed in feeds:
            session.run(None, feed)
    return time.perf_counter() - start


def timing_plan(feeds: list[dict], seconds: tuple[float, float], budget: float) -> tuple[list[dict], int]:
    """Which feeds to time and how many times over per repetition, from the seconds one pass over the feeds
    took each model: a small model repeats them for at least MIN_TIMING_SECONDS (so the clock's resolution and
    one scheduler hiccup do not decide the ratio); a large one times only as many feeds as let
    MIN_REPETITIONS repetitions of both models fit into the budget."""
    both_per_feed = max(sum(seconds) / len(feeds), 1e-7)
    fitting = int(budget / MIN_REPETITIONS / both_per_feed)
    if fitting < len(feeds):
        return feeds[: max(1, fitting)], 1
    return feeds, max(1, min(MAX_ROUNDS, math.ceil(MIN_TIMING_SECONDS / max(min(seconds), 1e-6))))


def top_labels(output):
    """One top label per input from a classifier's first output: the argmax over its last axis for scores
    ([batch, classes] or more), the value itself for labels (integers); None for anything else (one score per
    input says nothing about labels without a threshold)."""
    import numpy as np

    output = np.asarray(output)
    if output.dtype.kind == "f":
        return np.argmax(output.reshape(-1, output.shape[-1]), axis=1) if output.ndim >= 2 else None
    if output.dtype.kind in "iub":
        return output.ravel()
    return None


def compare(expected: list[list], actual: list[list], *, classification: bool) -> dict:
    """max_abs_diff over every output; for classification, the share of inputs whose top label (`top_labels`
    of the first output) is unchanged."""
    import numpy as np

    max_diff, mismatched_non_finite = 0.0, 0
    agreeing = compared = 0
    for before, after in zip(expected, actual, strict=True):
        for a, b in zip(before, after, strict=True):
            a, b = np.asarray(a), np.asarray(b)
            if a.shape != b.shape:
                raise Failed(f"The quantized model answers with shape {list(b.shape)} for {list(a.shape)}.")
            if a.dtype.kind not in "fiub" or a.size == 0:
                continue
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
            finite = np.isfinite(a64) & np.isfinite(b64)
            mismatched_non_finite += int(np.count_nonzero(~same & ~finite))
            if np.any(finite):
                max_diff = max(max_diff, float(np.max(np.abs(a64[finite] - b64[finite]))))
        if classification:
            top_before, top_after = top_labels(before[0]), top_labels(after[0])
            if top_before is not None:
                agreeing += int(np.count_nonzero(top_before == top_after))
                compared += len(top_before)
    return {
        "max_abs_diff": max_diff,
        "non_finite_mismatches": mismatched_non_finite,
        "agreement": agreeing / compared if classification and compared else None,
        "inputs": compared if classification and compared else None,
    }


@dataclass
class Reference:
    """The original in its session, the feeds it runs on, and its outputs on them."""

    session: object
    feeds: list[dict]
    outputs: list[list]
    seconds: float


def measure(reference: Reference, optimized: str, *, classification: bool, budget: float) -> dict:
    """The quantized model in a fresh session on the original's feeds: outputs compared, then both timed in
    alternation."""
    feeds = reference.feeds
    candidate = new_session(optimized)
    actual, candidate_seconds = candidate_outputs(candidate, feeds)
    result = compare(reference.outputs, actual, classification=classification)
    rows = sum(len(next(iter(feed.values()))) for feed in feeds)
    seconds = (reference.seconds, candidate_seconds)
    if sum(seconds) < MIN_TIMING_SECONDS:  # those first passes include warm-up; timing again is cheap here
        seconds = (timed(reference.session, feeds, 1), timed(candidate, feeds, 1))
    timed_feeds, rounds = timing_plan(feeds, seconds, budget)
    # Alternating the order each repetition keeps a warm cache or a busy neighbour from favouring one model.
    times = {"original": [], "optimized": []}
    sessions = {"original": reference.session, "optimized": candidate}
    started = time.monotonic()
    repetitions = 0
    while repetitions < MAX_REPETITIONS:
        order = ("original", "optimized") if repetitions % 2 == 0 else ("optimized", "original")
        for name in order:
            times[name].append(timed(sessions[name], timed_feeds, rounds))
        repetitions += 1
        if repetitions >= MIN_REPETITIONS and time.monotonic() - started > budget:
            break
    median_before = statistics.median(times["original"])
    median_after = statistics.median(times["optimized"])
    if median_after <= 0 or median_before <= 0:
        raise Failed("The timings were too short to compare.")
    return {
        **result,
        "speedup": median_before / median_after,
        "median_seconds": {"original": median_before, "optimized": median_after},
        "repetitions": repetitions,
        "runs": {name: len(times[name]) * rounds * len(timed_feeds) for name in times},
        "feeds": len(feeds),
        "timed_feeds": len(timed_feeds),
        "rows": rows,
    }


def optimize(request: dict) -> dict:
    """Check the file, run the original on the measurement feeds, quantize (static: calibrated on the feeds
    the original runs on), then measure the result against it."""
    method = request["method"]
    if method not in METHODS:
        raise Failed(f"Unknown method {method!r}: use one of {', '.join(METHODS)}.")
    model = load_checked(request["path"])
    budget = request["timing_budget_seconds"]
    feeds = measurement_feeds(request["signature"]["inputs"], request, request["inputs"])
    session = new_session(request["path"])
    reference = Reference(session, *reference_outputs(session, feeds, budget))
    output = os.path.abspath(OUTPUT_NAME)
    try:
        quantize(model, method, output, reference.feeds)
    except Failed:
        raise
    except MemoryError as exc:
        raise Failed("Quantizing the model needs more memory than optimization allows.") from exc
    except Exception as exc:
        if resource_failure(exc):
            raise Failed(f"Quantizing the model needs more memory than optimization allows: {exc}") from exc
        raise Failed(f"ONNX Runtime's quantization failed: {sibling('trials').first_line(exc)}") from exc
    del model
    measured = measure(reference, output, classification=request["classification"], budget=budget)
    return {"method": method, "output": OUTPUT_NAME, **measured}


def main() -> None:
    sibling("verdict").verdict_main(optimize, refusal=Failed, limits="optimization", verb="optimize")


if __name__ == "__main__":
    main()
