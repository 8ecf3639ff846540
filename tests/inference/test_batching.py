"""Batching on the runner pool: requests of one model queued together run as one call and are split back per
caller; fixed-batch models run one call each; concurrent callers; the job path when Redis is out of reach."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from inference.runners.pool import RunnerProcess
from inference.runners.supervisor import pool_from_settings
from inference.scheduling import queue
from inference.scheduling.scheduler import Request, Source
from inference.services import target_find

from . import builders
from .conftest import assert_same, local_run, post_json


class Collected(Source):
    """Where a test's requests deliver their results."""

    def __init__(self, expected: int):
        self.expected = expected
        self.results: dict = {}
        self.deliveries: list[list[str]] = []
        self.done = threading.Event()

    def deliver(self, requests, results) -> None:
        self.deliveries.append([request.id for request in requests])
        self.results.update({request.id: result for request, result in zip(requests, results, strict=True)})
        if len(self.results) >= self.expected:
            self.done.set()


@pytest.fixture
def runner_calls(monkeypatch) -> list[dict]:
    """The first dimension of every input of every call a runner is given (the real call still runs)."""
    calls = []
    call = RunnerProcess.call

    def counted(self, header, tensors, deadline):
        calls.append({name: array.shape[0] if array.ndim else None for name, array in tensors.items()})
        return call(self, header, tensors, deadline)

    monkeypatch.setattr(RunnerProcess, "call", counted)
    return calls


@pytest.fixture
def one_runner(settings):
    """A real pool of one runner, not started yet: requests put first wait for it together."""
    settings.INFERENCE_RUNNERS, settings.INFERENCE_MODEL_CONCURRENCY = 1, 1
    pool = pool_from_settings("batching")
    yield pool
    pool.stop()


def run_together(pool, version, batch: list[dict[str, np.ndarray]]) -> list:
    model = version.model
    ref = target_find(owner=model.owner.username, name=model.name, number=None, user=None).model_ref
    source = Collected(len(batch))
    for index, tensors in enumerate(batch):
        pool.scheduler.put(Request(id=str(index), model=ref, tensors=tensors, source=source))
    pool.start()
    assert source.done.wait(120), "the pool did not answer"
    return [source.results[str(index)] for index in range(len(batch))]


@pytest.mark.django_db
def test_requests_with_a_dynamic_batch_dim_run_as_one_call_and_split_back(
    alice, mixed, one_runner, runner_calls
):
    batch = [builders.mixed_inputs(batch=size, seed=size) for size in (1, 3, 2)]
    results = run_together(one_runner, mixed, batch)
    assert runner_calls == [{name: 6 for name in batch[0]}]  # one call of 1 + 3 + 2 rows
    for inputs, result in zip(batch, results, strict=True):
        assert result.succeeded, result.error
        expected = local_run(builders.mixed_onnx(), inputs)
        assert set(result.outputs) == set(expected)
        for name, array in expected.items():
            assert result.outputs[name].shape == array.shape
            assert_same(array, result.outputs[name])


@pytest.mark.django_db
def test_fixed_batch_dims_run_one_call_each(alice, one_runner, runner_calls):
    version = builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    batch = [{"x": np.array([float(i)], dtype=np.float32), "n": np.array([i])} for i in range(3)]
    results = run_together(one_runner, version, batch)
    assert len(runner_calls) == 3
    assert [r.outputs["y"].tolist() for r in results] == [[0.0], [2.0], [4.0]]


@pytest.mark.django_db
def test_a_bad_request_in_a_batch_fails_alone(alice, mixed, one_runner, runner_calls):
    good = [builders.mixed_inputs(batch=2, seed=1), builders.mixed_inputs(batch=1, seed=2)]
    bad = builders.mixed_inputs(batch=1, seed=3)
    bad["x"] = np.zeros((1, 4), dtype=np.float32)  # the model takes 3 columns
    results = run_together(one_runner, mixed, [good[0], bad, good[1]])
    assert len(runner_calls) == 3  # shapes differ: each request ran on its own
    assert not results[1].succeeded and "the model failed" in results[1].error
    for inputs, result in zip(good, [results[0], results[2]], strict=True):
        assert result.succeeded, result.error
        for name, array in local_run(builders.mixed_onnx(), inputs).items():
            assert_same(array, result.outputs[name])


def v2_body(inputs: dict[str, np.ndarray], signature: dict) -> dict:
    return {
        "inputs": [
            {
                "name": name,
                "datatype": spec["datatype"],
                "shape": list(array.shape),
                "data": [v.decode() for v in array.ravel()]
                if array.dtype == object
                else array.ravel().tolist(),
            }
            for (name, array), spec in zip(inputs.items(), signature["inputs"], strict=True)
        ]
    }


@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_each_get_their_own_results(client, alice_key, mixed, celery_worker_process):
    from django.db import connection

    inputs = [builders.mixed_inputs(batch=1 + i % 3, seed=100 + i) for i in range(12)]
    responses = [None] * len(inputs)

    def call(index: int) -> None:
        try:
            body = v2_body(inputs[index], mixed.signature)
            responses[index] = post_json(client, "/v2/models/alice/mixed/infer", body, alice_key)
        finally:
            connection.close()

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for given, response in zip(inputs, responses, strict=True):
        assert response.status_code == 200, response.content
        outputs = {o["name"]: o for o in json.loads(response.content)["outputs"]}
        for name, expected in local_run(builders.mixed_onnx(), given).items():
            assert outputs[name]["shape"] == list(expected.shape)
            data = np.asarray(outputs[name]["data"], dtype=object if expected.dtype == object else None)
            assert_same(expected, data)


@pytest.fixture
def no_worker_serves_the_queue(settings):
    """The web's request queue under a key prefix no worker serves (no heartbeat there), and no runner pool
    linked on this host."""
    import uuid

    settings.INFERENCE_REDIS_PREFIX = f"mp:nobody-{uuid.uuid4().hex[:8]}:"
    settings.INFERENCE_LINK = False
    queue.reset_client()
    yield
    queue.reset_client()  # forget what was seen of the workers


@pytest.mark.django_db(transaction=True)
def test_with_no_worker_serving_the_queue_a_call_takes_the_job_path(
    client, alice_key, mixed, celery_worker_process, no_worker_serves_the_queue
):
    from inference.models import Prediction

    inputs = builders.mixed_inputs(batch=1, seed=9)
    body = {
        "inputs": {n: [v.decode() for v in a] if a.dtype == object else a.tolist() for n, a in inputs.items()}
    }
    response = post_json(client, "/api/v1/models/alice/mixed/predict", body, alice_key)
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded"
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    np.testing.assert_array_equal(outputs["idsum"]["data"], inputs["ids"].sum(axis=1))
    job = Prediction.objects.get(id=response.json()["id"])
    assert (
        job.inputs is not None and job.attempts == 1
    )  # it ran as a job: its inputs were kept for the worker
    assert not queue.depth(queue.client(), mixed.sha256)  # and it was taken back off the queue
