"""Observability against a live deployment: a real Prometheus scraping gunicorn's `/metrics` while a worker
serves two models; Triton's statistics endpoint read by tritonclient; request and prediction log lines."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time

import pytest
import requests
import tritonclient.http as httpclient
from django.test import override_settings

from portal.models import ApiKey
from portal.services import quota_set
from tests.conftest import ServingStack, free_port

from . import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

N = 6
FULL_KEY = re.compile(r"mp_[0-9a-f]+_[A-Za-z0-9_-]{20,}")


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory):
    stack = ServingStack(tmp_path_factory.mktemp("observed")).start()
    yield stack
    stack.stop()


class Prometheus:
    """Debian's `prometheus`, scraping one target every second, with its HTTP API on a free port."""

    def __init__(self, root, target: str):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: modelport\n    metrics_path: /metrics\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        binary = shutil.which("prometheus")
        assert binary, "prometheus is missing: `make test` installs Debian's package"
        self.process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=open(root / "prometheus.log", "wb"),
            stderr=subprocess.STDOUT,
        )

    def value(self, query: str) -> float | None:
        answer = requests.get(f"{self.url}/api/v1/query", params={"query": query}, timeout=5).json()
        assert answer["status"] == "success", answer
        result = answer["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, query: str, expected: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.value(query)
            except requests.RequestException:
                value = None
            if value == expected:
                return
            assert time.monotonic() < deadline, f"{query} = {value}, expected {expected}"
            time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


@pytest.fixture
def prometheus(stack, tmp_path):
    server = Prometheus(tmp_path, stack.web.url.removeprefix("http://"))
    yield server
    server.stop()


@pytest.fixture
def two_models(alice):
    quota_set(user=alice, requests_per_minute=100_000, requests_per_day=1_000_000)
    builders.publish(owner=alice, name="seen-one", data=builders.digits_onnx(seed=1))
    builders.publish(owner=alice, name="seen-two", data=builders.digits_onnx(seed=2))
    return ApiKey.issue(user=alice, name="observed", scopes=["read", "predict"])[1]


def predict_both(stack, key: str) -> None:
    """N calls to each model: seen-one over /api/v1, seen-two over /v2 (as tritonclient would send them)."""
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(N):
        response = requests.post(
            f"{stack.web.url}/api/v1/models/alice/seen-one/predict",
            json={"inputs": {"pixels": [[0.5] * 64]}},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
        body = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.25] * 64}]}
        response = requests.post(
            f"{stack.web.url}/v2/models/alice/seen-two/infer",
            json=body,
            headers={**headers, "X-Request-ID": "client-chosen-id-1"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert response.headers["X-Request-ID"] == "client-chosen-id-1"


def test_prometheus_counts_every_request_and_its_queue_and_compute_time(stack, prometheus, two_models):
    predict_both(stack, two_models)
    for model in ("alice/seen-one", "alice/seen-two"):
        selector = f'model="{model}"'
        prometheus.wait_for(f'sum(modelport_requests_total{{{selector},outcome="succeeded"}})', N)
        prometheus.wait_for(f"sum(modelport_request_duration_seconds_count{{{selector}}})", N)
        prometheus.wait_for(f"sum(modelport_queue_duration_seconds_count{{{selector}}})", N)
        prometheus.wait_for(f"sum(modelport_compute_duration_seconds_count{{{selector}}})", N)
        # Every observation falls in a finite bucket (none took a minute), so the buckets are filled in.
        prometheus.wait_for(f'sum(modelport_queue_duration_seconds_bucket{{{selector},le="60.0"}})', N)
        prometheus.wait_for(f'sum(modelport_compute_duration_seconds_bucket{{{selector},le="60.0"}})', N)
    assert prometheus.value('sum(modelport_requests_total{protocol="v1"})') == N
    assert prometheus.value('sum(modelport_requests_total{protocol="v2"})') == N
    assert prometheus.value("sum(modelport_batch_size_count)") >= 1
    assert prometheus.value("sum(modelport_runners)") >= 1


def test_triton_statistics_match_the_calls_and_tritonclient_reads_them(stack, two_models):
    predict_both(stack, two_models)
    headers = {"Authorization": f"Bearer {two_models}"}
    url = f"{stack.web.url}/v2/models/alice/seen-one/versions/1/stats"
    deadline = time.monotonic() + 30
    while (stats := requests.get(url, headers=headers, timeout=10).json())["model_stats"][0][
        "inference_stats"
    ]["success"]["count"] != N:
        assert time.monotonic() < deadline, stats
        time.sleep(0.2)
    entry = stats["model_stats"][0]
    assert entry["name"] == "alice/seen-one" and entry["version"] == "1"
    assert entry["inference_count"] == N and 1 <= entry["execution_count"] <= N
    assert entry["inference_stats"]["fail"]["count"] == 0
    assert entry["inference_stats"]["queue"]["count"] == N
    assert entry["inference_stats"]["compute_infer"]["count"] == N
    assert entry["inference_stats"]["compute_infer"]["ns"] > 0
    assert sum(batch["compute_infer"]["count"] for batch in entry["batch_stats"]) == entry["execution_count"]

    triton = httpclient.InferenceServerClient(url=stack.web.url.removeprefix("http://"))
    read = triton.get_inference_statistics(model_name="alice/seen-two", model_version="1", headers=headers)
    assert read["model_stats"][0]["inference_stats"]["success"]["count"] == N
    every_version = triton.get_inference_statistics(model_name="alice/seen-one", headers=headers)
    assert [entry["version"] for entry in every_version["model_stats"]] == ["1"]


def test_stats_of_a_private_model_are_not_found_for_others(stack, alice, bob):
    builders.publish(owner=alice, name="secret", data=builders.digits_onnx(seed=3), visibility="private")
    key = ApiKey.issue(user=bob, name="bob", scopes=["read"])[1]
    response = requests.get(
        f"{stack.web.url}/v2/models/alice/secret/stats",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    assert response.status_code == 404 and "error" in response.json()


def test_log_lines_are_json_with_the_request_id_and_hold_no_key(stack, two_models):
    predict_both(stack, two_models)
    prefix = ApiKey.prefix_of(two_models)
    deadline = time.monotonic() + 30
    while '"message": "prediction"' not in stack.logs():
        assert time.monotonic() < deadline, "no prediction line was logged"
        time.sleep(0.2)
    logs = stack.logs()
    assert two_models not in logs and two_models.split("_", 2)[2] not in logs  # the secret part
    assert not FULL_KEY.search(logs), FULL_KEY.search(logs).group(0)[:12]
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    requests_logged = [line for line in lines if line["message"] == "request" and line.get("model")]
    chosen = [line for line in requests_logged if line["request_id"] == "client-chosen-id-1"]
    assert chosen and chosen[-1]["model"] == "alice/seen-two" and chosen[-1]["key_prefix"] == prefix
    assert chosen[-1]["status"] == 200 and chosen[-1]["duration_ms"] > 0
    predictions = [line for line in lines if line["message"] == "prediction"]
    assert {line["model"] for line in predictions} >= {"alice/seen-one", "alice/seen-two"}
    assert all("outputs" not in line and "inputs" not in line for line in predictions)


@pytest.fixture
def grpc_beside_stack(stack, tmp_path):
    from .test_e2e_grpc import GrpcServer

    server = GrpcServer(tmp_path / "grpcserver.log")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.env.items():
            patch.setenv(name, value)
        server.start()
    yield server
    server.stop()


def metric_value(stack, series: str) -> float:
    body = requests.get(f"{stack.web.url}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(series + " "))


def test_grpc_calls_count_in_the_same_metrics(stack, grpc_beside_stack, two_models):
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=grpc_beside_stack.address)
    series = 'modelport_requests_total{model="alice/seen-one",outcome="succeeded",protocol="grpc"}'
    before = metric_value(stack, series)
    for _ in range(N):
        pixels = grpcclient.InferInput("pixels", [1, 64], "FP32")
        pixels.set_data_from_numpy(np.full((1, 64), 0.5, dtype=np.float32))
        client.infer("alice/seen-one", [pixels], headers={"authorization": f"Bearer {two_models}"})
    assert metric_value(stack, series) == before + N


def test_prometheus_sees_time_to_first_token_tokens_per_second_and_tokens_of_chat_calls(
    stack, prometheus, alice
):
    from .llm_builders import publish_smollm2

    publish_smollm2(owner=alice, name="observed-chat")
    quota_set(user=alice, tokens_per_minute=100_000, tokens_per_day=1_000_000)
    key = ApiKey.issue(user=alice, name="chat", scopes=["read", "predict"])[1]
    used = {"prompt": 0, "completion": 0}
    for stream in (False, True):
        body = {
            "model": "alice/observed-chat",
            "messages": [{"role": "user", "content": "Count to ten."}],
            "max_tokens": 24,
            "temperature": 0,
        }
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        response = requests.post(
            f"{stack.web.url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
            timeout=120,
        )
        assert response.status_code == 200, response.text
        if stream:
            chunks = [
                json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")
            ]
            usage = chunks[-1]["usage"]
        else:
            usage = response.json()["usage"]
        used["prompt"] += usage["prompt_tokens"]
        used["completion"] += usage["completion_tokens"]
    selector = 'model="alice/observed-chat"'
    prometheus.wait_for(f"sum(modelport_time_to_first_token_seconds_count{{{selector}}})", 2)
    prometheus.wait_for(f"sum(modelport_generation_tokens_per_second_count{{{selector}}})", 2)
    prometheus.wait_for(f'sum(modelport_tokens_total{{{selector},kind="prompt"}})', used["prompt"])
    prometheus.wait_for(f'sum(modelport_tokens_total{{{selector},kind="completion"}})', used["completion"])
    # A first token within a minute, at a rate above one token a second: the finite buckets hold them.
    prometheus.wait_for(f'sum(modelport_time_to_first_token_seconds_bucket{{{selector},le="60.0"}})', 2)
    assert prometheus.value(f'sum(modelport_generation_tokens_per_second_bucket{{{selector},le="1.0"}})') == 0
    # The operations page reads the same histograms: two calls, a median first token under a minute.
    from inference.operations import chat_models

    with override_settings(METRICS_DIR=stack.metrics_dir):
        [chat] = [row for row in chat_models() if row["model"] == "alice/observed-chat"]
    assert chat["calls"] == 2 and 0 < chat["ttft_ms"] <= 60_000 and chat["tokens_per_second"] > 1
