"""The interactive consumer: one batched call per model, split back per caller; concurrent callers."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import redis

from inference import interactive
from inference.consumer import run_batch
from inference.runtimes import SessionCache
from inference.services import version_ref

from . import builders
from .conftest import assert_same, local_run, post_json


class CountingRuntime:
    """A real runtime, with its calls counted."""

    def __init__(self, runtime):
        self.runtime, self.calls = runtime, 0

    def run_with_limit(self, inputs, seconds):
        self.calls += 1
        return self.runtime.run_with_limit(inputs, seconds)


@pytest.mark.django_db
def test_requests_with_a_dynamic_batch_dim_run_as_one_call_and_split_back(alice, mixed):
    runtime = CountingRuntime(SessionCache().get(version_ref(mixed)))
    batch = [builders.mixed_inputs(batch=size, seed=size) for size in (1, 3, 2)]
    results = run_batch(runtime, mixed.signature, batch, None)
    assert runtime.calls == 1
    for inputs, outputs in zip(batch, results, strict=True):
        for name, expected in local_run(builders.mixed_onnx(), inputs).items():
            assert_same(expected, outputs[name])


@pytest.mark.django_db
def test_fixed_batch_dims_run_one_call_each(alice):
    version = builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    runtime = CountingRuntime(SessionCache().get(version_ref(version)))
    batch = [{"x": np.array([float(i)], dtype=np.float32), "n": np.array([i])} for i in range(3)]
    results = run_batch(runtime, version.signature, batch, None)
    assert runtime.calls == 3
    assert [r["y"].tolist() for r in results] == [[0.0], [2.0], [4.0]]


@pytest.mark.django_db(transaction=True)
def test_concurrent_callers_each_get_their_own_results(client, alice_key, mixed, celery_worker_process):
    from django.db import connection

    inputs = [builders.mixed_inputs(batch=1 + i % 3, seed=100 + i) for i in range(12)]
    responses = [None] * len(inputs)

    def call(index: int) -> None:
        try:
            body = {
                "inputs": [
                    {
                        "name": name,
                        "datatype": spec["datatype"],
                        "shape": list(array.shape),
                        "data": [v.decode() for v in array.ravel()]
                        if array.dtype == object
                        else array.ravel().tolist(),
                    }
                    for (name, array), spec in zip(
                        inputs[index].items(), mixed.signature["inputs"], strict=True
                    )
                ]
            }
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
            data = np.asarray(outputs[name]["data"], dtype=object if expected.dtype == object else None)
            assert_same(expected, data)


@pytest.mark.django_db(transaction=True)
def test_with_redis_out_of_reach_a_call_takes_the_job_path(
    client, alice_key, mixed, monkeypatch, celery_worker_process
):
    from tests.conftest import free_port

    monkeypatch.setattr(interactive, "_client", redis.Redis(port=free_port(), socket_connect_timeout=0.2))
    inputs = builders.mixed_inputs(batch=1, seed=9)
    body = {
        "inputs": {n: [v.decode() for v in a] if a.dtype == object else a.tolist() for n, a in inputs.items()}
    }
    response = post_json(client, "/api/v1/models/alice/mixed/predict", body, alice_key)
    assert response.status_code == 200, response.content
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    np.testing.assert_array_equal(outputs["idsum"]["data"], inputs["ids"].sum(axis=1))
