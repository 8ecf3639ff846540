"""`manage.py benchmark`'s parts that can be checked without timing: the BentoML peer it writes and starts,
and the report it prints (the figures themselves are measurements, never asserted)."""

from __future__ import annotations

import http.client
import importlib.util
import json

import numpy as np
import onnxruntime
import pytest

from inference.benchmarking import bento, onnx_models
from inference.benchmarking.load import Measurement, Target, measure_http
from inference.benchmarking.report import (
    API_V1,
    BENTOML,
    GRPC,
    RAW,
    V2_BINARY,
    V2_JSON,
    Noisy,
    Results,
    done_when_checks,
    format_noisy,
    format_table,
)


def reference(model: bytes, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def test_the_bentoml_service_it_writes_is_a_batchable_service_of_the_same_model(tmp_path):
    model = onnx_models.mlp()
    service_file = bento.write_service(tmp_path, model)
    assert (tmp_path / "model.onnx").read_bytes() == model
    spec = importlib.util.spec_from_file_location("benchmark_bento_service", service_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    service = getattr(module, bento.SERVICE_CLASS)
    api = service.apis["predict"]
    assert api.batchable and api.batch_dim == (0, 0) and api.route == bento.API_ROUTE
    batch = np.random.default_rng(0).random((3, 64), dtype=np.float32)
    np.testing.assert_allclose(service.inner().predict(batch), reference(model, batch), rtol=1e-5)


@pytest.mark.e2e
def test_it_serves_the_model_with_bentoml_offline_to_the_load_client_and_stops_it_afterwards():
    model = onnx_models.mlp()
    rows = np.random.default_rng(1).random((2, 64), dtype=np.float32)
    with bento.BentoServer(model) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        connection.request(
            "POST", bento.API_ROUTE, body=bento.json_body(rows), headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        answer = json.loads(response.read())
        connection.close()
        body, headers = bento.json_body(rows[:1]), {"Content-Type": "application/json"}
        served = measure_http(
            Target("127.0.0.1", server.port, bento.API_ROUTE, body, headers), requests=20, concurrency=4
        )
        refused = measure_http(
            Target("127.0.0.1", server.port, "/no-such-api", body, headers), requests=5, concurrency=2
        )
        process, directory = server.process, server.directory
    assert (served.count, served.errors) == (20, 0)
    assert (refused.count, refused.errors) == (0, 5) and refused.first_error.startswith("404")
    assert response.status == 200
    np.testing.assert_allclose(np.array(answer, np.float32), reference(model, rows), rtol=1e-4, atol=1e-6)
    assert process.poll() is not None
    assert not directory.exists()


def measurement(p50: float, rate: float, errors: int = 0) -> Measurement:
    return Measurement(p50=p50, p99=p50 * 2, rate=rate, count=100, errors=errors)


def full_results(bento_rate: float) -> Results:
    results = Results()
    results.add("MLP", RAW, 1, measurement(0.005, 20000))
    results.add("MLP", BENTOML, 1, measurement(1.0, 900))
    results.add("MLP", BENTOML, 16, measurement(15.0, bento_rate))
    results.add("MLP", API_V1, 1, measurement(0.8, 1100))
    results.add("MLP", API_V1, 16, measurement(9.0, 1500))
    results.add("MLP", V2_JSON, 16, measurement(8.0, 1600))
    results.add("MLP", V2_BINARY, 16, measurement(7.5, 1700))
    results.add("MLP", GRPC, 1, measurement(0.7, 1300))
    results.add("MLP", GRPC, 16, measurement(7.0, 1800))
    results.add("CNN", RAW, 1, measurement(1.0, 1000))
    results.add("CNN", BENTOML, 8, measurement(30.0, 250))
    results.add("CNN", API_V1, 8, measurement(20.0, 400))
    results.add("CNN", V2_JSON, 8, measurement(20.0, 380))
    results.add("CNN", V2_BINARY, 8, measurement(10.0, 800))
    results.add("CNN", GRPC, 8, measurement(9.0, 850))
    return results


def quiet_and_noisy(noisy_p50: float, errors: int = 0) -> Noisy:
    return Noisy(
        quiet=measurement(1.0, 900),
        noisy=measurement(noisy_p50, 500, errors),
        model="benchmark/mlp",
        path=API_V1,
        noisy_model="benchmark-noisy/slow",
        noisy_callers=2,
        noisy_call_seconds=[10.2, 9.8],
        noisy_errors=[],
    )


def checks(results: Results, noisy: Noisy | None) -> list[str]:
    found = done_when_checks(results, noisy, mlp="MLP", cnn="CNN", mlp_level=16, cnn_level=8)
    return [check.line() for check in found]


def test_the_table_gives_each_path_its_ratios_against_bentoml_and_raw_onnxruntime():
    lines = format_table(full_results(bento_rate=1000))
    assert lines[0].split()[:6] == ["model", "path", "conc", "p50", "ms", "p99"]
    v2_mlp = next(line for line in lines if line.startswith("MLP") and V2_JSON in line)
    # 1600 req/s against BentoML's 1000 and raw's 20000; p50 8 ms against BentoML's 15 ms
    assert v2_mlp.split()[-4:] == ["1.60×", "0.53×", "0.08×", "0"]
    bento_row = next(line for line in lines if BENTOML in line and " 16 " in line)
    assert bento_row.split()[-4:] == ["—", "—", "0.05×", "0"]


def test_every_done_when_figure_passes_when_met():
    lines = checks(full_results(bento_rate=1000), quiet_and_noisy(noisy_p50=1.9))
    assert len(lines) == 6 + 8  # and a p99 line per Modelport path, both models, under load
    assert all(line.startswith("PASS") for line in lines), lines
    assert "1,600 req/s vs BentoML 1,000 req/s = 1.60×" in lines[0]


def test_a_missed_figure_or_failed_calls_say_fail_plainly():
    lines = checks(full_results(bento_rate=1100), quiet_and_noisy(noisy_p50=1.5, errors=3))
    assert lines[0].startswith("FAIL") and "1.45×" in lines[0]
    assert lines[-1].startswith("FAIL") and "3 call(s) failed" in lines[-1]

    stalled = quiet_and_noisy(noisy_p50=float("nan"), errors=2)
    stalled.noisy = Measurement(float("nan"), float("nan"), 0.0, 0, 2, '202: {"status":"queued"}')
    assert checks(full_results(bento_rate=1000), stalled)[-1].startswith(
        "FAIL  noisy neighbour: quiet model's p50 ≤ 2× its quiet p50: none of its 2 call(s) under noise "
        'answered 200 (first: 202: {"status":"queued"})'
    )


def test_without_bentoml_its_checks_fail_and_say_how_to_install_it():
    results = full_results(bento_rate=1000)
    for key in [key for key in results.rows if key[1] == BENTOML]:
        del results.rows[key]
    results.missing[BENTOML] = f"BentoML is not installed: {bento.INSTALL_HINT}"
    lines = checks(results, None)
    # The tails are within 3× their own p50, so they pass without BentoML's p99.
    assert [line.split()[0] for line in lines] == ["FAIL"] * 4 + ["PASS"] * 9 + ["FAIL"]
    assert lines[5].endswith("no BentoML figure")
    assert "no BentoML figure" in lines[0]
    assert "pip install '.[bench]'" in format_table(results)[-1]
    assert format_noisy(None, "the server refused")[0] == "noisy neighbour: not measured: the server refused"


def test_the_benchmark_measures_a_confined_runner_next_to_an_unconfined_one():
    from django.conf import settings

    from inference.benchmarking.confinement import format_confinement, measure_confinement

    rows = measure_confinement(
        data=onnx_models.mlp(),
        input_name=onnx_models.MLP_INPUT,
        sample=np.random.default_rng(0).random((1, 64), dtype=np.float32),
        user=settings.INFERENCE_RUNNER_USER,
        starts=1,
        calls=20,
    )
    assert [row.mode for row in rows] == ["unconfined, the worker's user", "bubblewrap + seccomp, own user"]
    assert all(0 < row.call_p50_ms <= row.call_p99_ms and row.start_ms > 0 for row in rows)
    lines = format_confinement(rows, "benchmark/mlp")
    assert lines[-1].startswith("  cost of confinement: start ")


def test_the_grpc_rows_have_the_same_ratios_as_the_http_rows():
    lines = format_table(full_results(bento_rate=1000))
    grpc_rows = [line.split() for line in lines if line.split()[1:2] == [GRPC]]
    assert [row[0] for row in grpc_rows] == ["MLP", "MLP", "CNN"]
    # MLP c16: 1800 req/s against BentoML's 1000 and raw's 20000; p50 7 ms against BentoML's 15 ms
    assert grpc_rows[1][2] == "16" and grpc_rows[1][-4:] == ["1.80×", "0.47×", "0.09×", "0"]
    # CNN c8: 850 against BentoML's 250 and raw's 1000
    assert grpc_rows[2][-4:] == ["3.40×", "0.30×", "0.85×", "0"]


def test_every_modelport_path_has_its_p99_checked_against_its_p50_and_bentomls_p99():
    lines = checks(full_results(bento_rate=1000), quiet_and_noisy(noisy_p50=1.9))
    tails = [line for line in lines if "p99 ≤ max(3× its p50, BentoML's p99)" in line]
    assert [line.split()[1:4] for line in tails] == [
        ["MLP", "/api/v1", "c16"],
        ["MLP", "/v2", "JSON"],
        ["MLP", "/v2", "binary"],
        ["MLP", "gRPC", "c16"],
        ["CNN", "/api/v1", "c8"],
        ["CNN", "/v2", "JSON"],
        ["CNN", "/v2", "binary"],
        ["CNN", "gRPC", "c8"],
    ]
    assert tails[3] == (
        "PASS  MLP gRPC c16 p99 ≤ max(3× its p50, BentoML's p99): "
        "14.0 ms vs max(3 × 7.0, BentoML 30.0) = 30.0 ms"
    )

    # A row that was not measured is a FAIL, never a silent pass.
    results = full_results(bento_rate=1000)
    del results.rows[("MLP", API_V1, 16)]
    first = checks(results, quiet_and_noisy(noisy_p50=1.9))[5]
    assert first == "FAIL  MLP /api/v1 c16 p99 ≤ max(3× its p50, BentoML's p99): not measured (no figure)"


def test_a_long_tail_fails_unless_bentomls_is_as_long():
    results = full_results(bento_rate=1000)
    results.add("MLP", GRPC, 16, Measurement(p50=7.0, p99=40.0, rate=1800, count=100))
    results.add("CNN", GRPC, 8, Measurement(p50=9.0, p99=55.0, rate=850, count=100))  # BentoML's p99 is 60
    lines = checks(results, quiet_and_noisy(noisy_p50=1.9))
    mlp, cnn = (next(line for line in lines if line.split()[1:3] == [name, GRPC]) for name in ("MLP", "CNN"))
    assert mlp.startswith("FAIL") and "40.0 ms vs max(3 × 7.0, BentoML 30.0) = 30.0 ms" in mlp
    assert cnn.startswith("PASS") and "55.0 ms vs max(3 × 9.0, BentoML 60.0) = 60.0 ms" in cnn


def test_without_a_grpc_server_its_rows_and_checks_say_why():
    results = full_results(bento_rate=1000)
    for key in [key for key in results.rows if key[1] == GRPC]:
        del results.rows[key]
    reason = "nothing answers gRPC at 127.0.0.1:8001 (StatusCode.UNAVAILABLE: failed to connect)"
    results.missing[f"{GRPC} (MLP)"] = results.missing[f"{GRPC} (CNN)"] = reason
    assert f"{GRPC} (MLP): not measured: {reason}" in format_table(results)
    lines = checks(results, quiet_and_noisy(noisy_p50=1.9))
    grpc_lines = [line for line in lines if line.split()[2:3] == [GRPC]]
    assert len(grpc_lines) == 2
    assert all(line.startswith("FAIL") and line.endswith(f"not measured ({reason})") for line in grpc_lines)
