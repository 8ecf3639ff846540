"""The benchmark's table, its noisy-neighbour lines and the issue's "Done when" checks as PASS/FAIL lines."""

from __future__ import annotations

import math
from dataclasses import dataclass

from inference.benchmarking.load import Measurement

RAW = "raw ORT 1 thread"
BENTOML = "BentoML"
API_V1 = "/api/v1"
V2_JSON = "/v2 JSON"
V2_BINARY = "/v2 binary"
GRPC = "gRPC"
MODELPORT_PATHS = (API_V1, V2_JSON, V2_BINARY, GRPC)
PATHS = (RAW, BENTOML, *MODELPORT_PATHS)


@dataclass
class Results:
    """Measurements by (model, path, concurrency); `missing` says why a path has none (BentoML absent…)."""

    rows: dict[tuple[str, str, int], Measurement]
    missing: dict[str, str]

    def __init__(self):
        self.rows, self.missing = {}, {}

    def add(self, model: str, path: str, concurrency: int, measurement: Measurement) -> None:
        self.rows[(model, path, concurrency)] = measurement

    def get(self, model: str, path: str, concurrency: int) -> Measurement | None:
        return self.rows.get((model, path, concurrency))

    def raw(self, model: str) -> Measurement | None:
        return self.get(model, RAW, 1)

    def why_missing(self, model: str, path: str) -> str:
        return self.missing.get(f"{path} ({model})") or self.missing.get(path, "")


@dataclass
class Noisy:
    quiet: Measurement
    noisy: Measurement
    model: str
    path: str
    noisy_model: str
    noisy_callers: int
    noisy_call_seconds: list[float]
    noisy_errors: list[str]

    @property
    def ratio(self) -> float:
        return _ratio(self.noisy.p50, self.quiet.p50)


@dataclass
class Check:
    passed: bool
    text: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.text}"


def _ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return float("nan")
    return numerator / denominator


def _times(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}×"


def format_table(results: Results) -> list[str]:
    header = (
        f"{'model':<14} {'path':<17} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} "
        f"{'req/s ÷ Bento':>13} {'p50 ÷ Bento':>11} {'req/s ÷ raw':>11} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    for (model, path, level), result in results.rows.items():
        bento = results.get(model, BENTOML, level)
        raw = results.raw(model)
        versus_bento_rate = _ratio(result.rate, bento.rate) if bento and path != BENTOML else float("nan")
        versus_bento_p50 = _ratio(result.p50, bento.p50) if bento and path != BENTOML else float("nan")
        versus_raw = _ratio(result.rate, raw.rate) if raw and path != RAW else float("nan")
        lines.append(
            f"{model:<14} {path:<17} {level:>4} {result.p50:>8.3f} {result.p99:>8.3f} {result.rate:>8.0f} "
            f"{_times(versus_bento_rate):>13} {_times(versus_bento_p50):>11} {_times(versus_raw):>11} "
            f"{result.errors:>6}"
        )
    for path, reason in results.missing.items():
        lines.append(f"{path}: not measured: {reason}")
    return lines


def format_noisy(noisy: Noisy | None, reason: str = "") -> list[str]:
    if noisy is None:
        return [f"noisy neighbour: not measured: {reason}"]
    durations = sorted(noisy.noisy_call_seconds)
    calls = (
        f"{len(durations)} ended, {durations[0]:.1f}–{durations[-1]:.1f} s from request to answer"
        if durations
        else "none ended"
    )
    lines = [
        f"noisy neighbour: {noisy.model} {noisy.path} c1 p50 while another user's {noisy.noisy_model} is "
        f"kept busy by {noisy.noisy_callers} caller(s) of long calls ({calls})",
        f"  quiet p50 {noisy.quiet.p50:.3f} ms ({noisy.quiet.count} calls)   "
        f"noisy p50 {noisy.noisy.p50:.3f} ms ({noisy.noisy.count} calls)   "
        f"ratio {_times(noisy.ratio)}   errors {noisy.noisy.errors}",
    ]
    if noisy.noisy.first_error:
        lines.append(f"  first error of the quiet model: {noisy.noisy.first_error}")
    if noisy.noisy_errors:
        lines.append(f"  the noisy calls answered: {noisy.noisy_errors[0]}")
    return lines


def _rate_check(
    label: str, result: Measurement | None, peer: Measurement | None, peer_name: str, factor: float
):
    if result is None or peer is None or not result.measured or not peer.measured:
        return Check(False, f"{label}: not measured ({_why(result, peer, peer_name)})")
    ratio = _ratio(result.rate, peer.rate)
    text = f"{label}: {result.rate:,.0f} req/s vs {peer_name} {peer.rate:,.0f} req/s = {_times(ratio)}"
    return _with_errors(ratio >= factor, text, result)


def _why(result: Measurement | None, peer: Measurement | None, peer_name: str) -> str:
    if peer is None or not peer.measured:
        return f"no {peer_name} figure"
    return "no Modelport figure" if result is None else f"every call failed: {result.first_error}"


def _with_errors(passed: bool, text: str, result: Measurement) -> Check:
    if result.errors:
        return Check(False, f"{text}, but {result.errors} call(s) failed ({result.first_error})")
    return Check(passed, text)


def _tail_check(results: Results, model: str, path: str, level: int, bento: Measurement | None) -> Check:
    """p99 ≤ max(3× its own p50, BentoML's p99 at the same concurrency): a tail no longer than the path's own
    spread allows, or than the peer's."""
    label = f"{model} {path} c{level} p99 ≤ max(3× its p50, BentoML's p99)"
    result = results.get(model, path, level)
    if result is None:
        return Check(False, f"{label}: not measured ({results.why_missing(model, path) or 'no figure'})")
    if not result.measured:
        return Check(False, f"{label}: not measured (every call failed: {result.first_error})")
    own = 3 * result.p50
    if bento is None or not bento.measured:
        text = f"{label}: {result.p99:.1f} ms vs 3 × {result.p50:.1f} ms = {own:.1f} ms, no BentoML figure"
        return _with_errors(result.p99 <= own, text, result)
    bound = max(own, bento.p99)
    text = (
        f"{label}: {result.p99:.1f} ms vs max(3 × {result.p50:.1f}, BentoML {bento.p99:.1f}) = {bound:.1f} ms"
    )
    return _with_errors(result.p99 <= bound, text, result)


def done_when_checks(
    results: Results, noisy: Noisy | None, *, mlp: str, cnn: str, mlp_level: int, cnn_level: int
) -> list[Check]:
    """The issue's "Done when" figures; a figure that was not measured is a FAIL, never a silent pass."""
    bento_mlp_high = results.get(mlp, BENTOML, mlp_level)
    bento_cnn_high = results.get(cnn, BENTOML, cnn_level)
    checks = [
        _rate_check(
            f"{mlp} {V2_JSON} c{mlp_level} ≥ 1.5× BentoML",
            results.get(mlp, V2_JSON, mlp_level),
            bento_mlp_high,
            BENTOML,
            1.5,
        )
    ]
    ours, bento = results.get(mlp, API_V1, 1), results.get(mlp, BENTOML, 1)
    label = f"{mlp} {API_V1} c1 p50 ≤ BentoML's"
    if ours is None or bento is None or not ours.measured or not bento.measured:
        checks.append(Check(False, f"{label}: not measured ({_why(ours, bento, BENTOML)})"))
    else:
        ratio = _ratio(ours.p50, bento.p50)
        text = f"{label}: {ours.p50:.3f} ms vs BentoML {bento.p50:.3f} ms = {_times(ratio)}"
        checks.append(_with_errors(ours.p50 <= bento.p50, text, ours))
    for path in (API_V1, V2_JSON):
        checks.append(
            _rate_check(
                f"{cnn} {path} c{cnn_level} ≥ 1.5× BentoML",
                results.get(cnn, path, cnn_level),
                bento_cnn_high,
                BENTOML,
                1.5,
            )
        )
    checks.append(
        _rate_check(
            f"{cnn} {V2_BINARY} c{cnn_level} ≥ 0.75× raw ORT single-thread rate",
            results.get(cnn, V2_BINARY, cnn_level),
            results.raw(cnn),
            "raw ORT",
            0.75,
        )
    )
    for model, level, bento in ((mlp, mlp_level, bento_mlp_high), (cnn, cnn_level, bento_cnn_high)):
        for path in MODELPORT_PATHS:
            checks.append(_tail_check(results, model, path, level, bento))
    label = "noisy neighbour: quiet model's p50 ≤ 2× its quiet p50"
    if noisy is None or not noisy.quiet.measured:
        checks.append(Check(False, f"{label}: not measured"))
    elif not noisy.noisy.measured:
        checks.append(
            Check(
                False,
                f"{label}: none of its {noisy.noisy.errors} call(s) under noise answered 200 "
                f"(first: {noisy.noisy.first_error})",
            )
        )
    else:
        text = f"{label}: {noisy.noisy.p50:.3f} ms vs {noisy.quiet.p50:.3f} ms = {_times(noisy.ratio)}"
        checks.append(_with_errors(noisy.ratio <= 2.0, text, noisy.noisy))
    return checks
