"""Workers that die or overrun: no prediction is left running, callers are answered, the worker keeps serving.

Each test runs its own worker (own Celery queue, own Redis key prefix) so the shared one is not disturbed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest

from inference import interactive
from inference.models import Prediction
from tests.conftest import WorkerProcess

from . import builders
from .conftest import post_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def own_worker(monkeypatch, settings, tmp_path, django_db_setup):
    """Start a dedicated worker with the given environment; the test process (the web) points at it."""
    workers = []

    def start(**env) -> WorkerProcess:
        tag = uuid.uuid4().hex[:8]
        queue, prefix = f"faults-{tag}", f"mp:faults-{tag}:"
        for name, value in {
            "INFERENCE_REDIS_PREFIX": prefix,
            "PREDICTION_REAPER_INTERVAL": "0.5",
            **env,
        }.items():
            monkeypatch.setenv(name, value)
        settings.INFERENCE_JOB_QUEUE, settings.INFERENCE_REDIS_PREFIX = queue, prefix
        worker = WorkerProcess(tmp_path / f"worker-{tag}.log", ["-Q", queue, "--hostname", f"{tag}@%h"])
        worker.start()
        workers.append(worker)
        deadline = time.monotonic() + 60
        while not interactive.client().exists(interactive.key("alive")):
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.1)
        return worker

    yield start
    for worker in workers:
        worker.stop()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def consumer_pid() -> int:
    pids = [int(pid) for pid in interactive.client().hvals(interactive.key("consumers"))]
    assert len(pids) == 1
    return pids[0]


def wait_for(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_a_job_whose_pool_process_is_killed_is_redelivered_or_failed_never_left_running(
    client, alice, alice_key, own_worker
):
    worker = own_worker()
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    url = "/api/v1/models/alice/slow/predict"
    response = post_json(
        client, url, {"inputs": {"x": [0.0], "n": [2_000_000]}}, alice_key, HTTP_PREFER="respond-async"
    )
    assert response.status_code == 202
    prediction_id = response.json()["id"]
    wait_for(
        lambda: Prediction.objects.get(id=prediction_id).status == "running", 30, "the job never started"
    )
    pool = [pid for pid in children_of(worker.process.pid) if pid != consumer_pid()]
    assert pool
    for pid in pool:
        os.kill(pid, signal.SIGKILL)

    final = wait_for(
        lambda: (p := Prediction.objects.get(id=prediction_id)).is_finished and p, 60, "left unfinished"
    )
    if final.status == "succeeded":
        assert final.attempts == 2 and final.outputs[0]["data"] == [2_000_000.0]
    else:
        assert final.status == "failed" and final.error
    response = post_json(
        client, url, {"inputs": {"x": [1.0], "n": [10]}}, alice_key, HTTP_PREFER="respond-async"
    )
    next_id = response.json()["id"]
    done = wait_for(lambda: (p := Prediction.objects.get(id=next_id)).is_finished and p, 60, "next job hung")
    assert done.status == "succeeded" and done.outputs[0]["data"] == [11.0]


def test_killing_the_interactive_consumer_answers_its_callers_503_and_it_comes_back(
    client, alice, alice_key, own_worker
):
    own_worker()
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    url = "/v2/models/alice/slow/infer"
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]},
            {"name": "n", "datatype": "INT64", "shape": [1], "data": [20_000_000]},
        ]
    }
    answers = {}

    def call():
        from django.db import connection

        try:
            answers["response"] = post_json(client, url, body, alice_key)
            answers["at"] = time.monotonic()
        finally:
            connection.close()  # this thread's own connection would keep the test database busy

    caller = threading.Thread(target=call)
    caller.start()
    name = wait_for(
        lambda: interactive.client().keys(interactive.key("inflight", "*")), 30, "never in flight"
    )
    assert name
    victim = consumer_pid()
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    caller.join(10)
    assert not caller.is_alive(), "the caller hung"
    assert answers["response"].status_code == 503
    assert "died" in answers["response"].json()["error"]
    assert answers["at"] - killed_at < 3
    record = wait_for(lambda: Prediction.objects.filter(status="failed").first(), 10, "no failed record")
    assert "died" in record.error

    body["inputs"][1]["data"] = [5]
    response = post_json(client, url, body, alice_key)
    assert response.status_code == 200, response.content
    assert response.json()["outputs"][0]["data"] == [5.0]
    assert consumer_pid() != victim


def test_a_model_past_the_time_limit_fails_with_a_timeout_and_the_worker_keeps_serving(
    client, alice, alice_key, own_worker, settings
):
    own_worker(PREDICTION_SOFT_TIME_LIMIT="1", PREDICTION_HARD_TIME_LIMIT="3", PREDICTION_REAP_MARGIN="1")
    settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT = 1, 3
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    forever = {"inputs": {"x": [0.0], "n": [10**12]}}

    response = post_json(
        client, "/api/v1/models/alice/slow/predict", forever, alice_key, HTTP_PREFER="respond-async"
    )
    prediction_id = response.json()["id"]
    failed = wait_for(
        lambda: (p := Prediction.objects.get(id=prediction_id)).is_finished and p, 30, "never ended"
    )
    assert failed.status == "failed" and "Timed out" in failed.error

    started = time.monotonic()
    v2_body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1], "data": [0.0]},
            {"name": "n", "datatype": "INT64", "shape": [1], "data": [10**12]},
        ]
    }
    response = post_json(client, "/v2/models/alice/slow/infer", v2_body, alice_key)
    assert response.status_code == 503 and "Timed out" in response.json()["error"]
    assert time.monotonic() - started < 10

    v2_body["inputs"][1]["data"] = [3]
    response = post_json(client, "/v2/models/alice/slow/infer", v2_body, alice_key)
    assert response.status_code == 200 and response.json()["outputs"][0]["data"] == [3.0]
    response = post_json(
        client,
        "/api/v1/models/alice/slow/predict",
        {"inputs": {"x": [0.0], "n": [4]}},
        alice_key,
        HTTP_PREFER="respond-async",
    )
    ok = wait_for(
        lambda: (p := Prediction.objects.get(id=response.json()["id"])).is_finished and p, 30, "hung"
    )
    assert ok.status == "succeeded"
