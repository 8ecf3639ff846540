"""NaN and ±Infinity travel as JSON literals in and out of /api/v1 and /v2, through the live server and
worker, on FP16 (overflow too), FP32 and FP64: never a 500. Their records keep them."""

from __future__ import annotations

import hashlib
import json
import math
import time

import numpy as np
import pytest
import requests
from onnx import TensorProto, helper

from . import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NON_FINITE = [math.nan, math.inf, -math.inf, 1.5]


def non_finite_onnx() -> bytes:
    """Identity on FP32 and FP64; FP16 times 60000, which overflows to infinity for anything above 1.09."""
    return builders.onnx_model(
        [
            helper.make_node("Identity", ["x"], ["x_out"]),
            helper.make_node("Identity", ["d"], ["d_out"]),
            helper.make_node("Mul", ["h", "big"], ["h_big"]),
        ],
        [("x", TensorProto.FLOAT, [-1]), ("d", TensorProto.DOUBLE, [-1]), ("h", TensorProto.FLOAT16, [-1])],
        [
            ("x_out", TensorProto.FLOAT, [-1]),
            ("d_out", TensorProto.DOUBLE, [-1]),
            ("h_big", TensorProto.FLOAT16, [-1]),
        ],
        [helper.make_tensor("big", TensorProto.FLOAT16, [], [60000.0])],
    )


@pytest.fixture
def non_finite(alice, request):
    # A name per test: the live server caches look-ups by name, and every test recreates the rows.
    name = "nf-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:10]
    builders.publish(owner=alice, name=name, data=non_finite_onnx())
    return f"alice/{name}"


def same(got: list, want: list) -> bool:
    return len(got) == len(want) and all(
        (math.isnan(a) and math.isnan(b)) or a == b for a, b in zip(got, want, strict=True)
    )


EXPECTED = {
    "x_out": NON_FINITE,
    "d_out": NON_FINITE,
    # 1.5 * 60000 overflows FP16: a model's own infinity, not one it was given.
    "h_big": [math.nan, math.inf, -math.inf, math.inf],
}


def assert_outputs(outputs: list[dict]) -> None:
    by_name = {o["name"]: o["data"] for o in outputs}
    for name, want in EXPECTED.items():
        assert same(by_name[name], want), (name, by_name[name])


def post(url: str, body: dict, key: str, **headers) -> requests.Response:
    text = json.dumps(body)  # Python writes NaN, Infinity and -Infinity as literals
    assert "NaN" in text and "Infinity" in text
    return requests.post(
        url,
        data=text,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
        timeout=60,
    )


@pytest.mark.parametrize("form", ["named", "oip"])
def test_api_v1_takes_and_gives_non_finite_literals(
    live_web, celery_worker_process, alice_key, non_finite, form
):
    if form == "named":
        inputs = {"x": NON_FINITE, "d": NON_FINITE, "h": NON_FINITE}
    else:
        inputs = [
            {"name": n, "datatype": t, "shape": [4], "data": NON_FINITE}
            for n, t in (("x", "FP32"), ("d", "FP64"), ("h", "FP16"))
        ]
    response = post(f"{live_web.url}/api/v1/models/{non_finite}/predict", {"inputs": inputs}, alice_key)
    assert response.status_code == 200, response.text
    assert "NaN" in response.text and "-Infinity" in response.text
    body = json.loads(response.text)
    assert_outputs(body["outputs"])

    # The record of the call keeps them too (interactive records are written within a second).
    url = f"{live_web.url}/api/v1/predictions/{body['id']}"
    deadline = time.monotonic() + 15
    record = requests.get(url, headers={"Authorization": f"Bearer {alice_key}"}, timeout=10)
    while record.status_code == 404 and time.monotonic() < deadline:
        time.sleep(0.2)
        record = requests.get(url, headers={"Authorization": f"Bearer {alice_key}"}, timeout=10)
    assert record.status_code == 200, celery_worker_process.log()
    assert_outputs(json.loads(record.text)["outputs"])


def test_a_queued_job_stores_and_returns_non_finite_outputs(
    live_web, celery_worker_process, alice_key, non_finite
):
    inputs = {"x": NON_FINITE, "d": NON_FINITE, "h": NON_FINITE}
    response = post(
        f"{live_web.url}/api/v1/models/{non_finite}/predict",
        {"inputs": inputs},
        alice_key,
        Prefer="respond-async",
    )
    assert response.status_code == 202, response.text
    url = response.json()["url"]
    deadline = time.monotonic() + 60
    while True:
        record = requests.get(url, headers={"Authorization": f"Bearer {alice_key}"}, timeout=10)
        assert record.status_code == 200, record.text
        body = json.loads(record.text)
        if body["status"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert body["status"] == "succeeded", body
    assert_outputs(body["outputs"])


def test_v2_takes_and_gives_non_finite_literals(live_web, celery_worker_process, alice_key, non_finite):
    inputs = [
        {"name": n, "datatype": t, "shape": [4], "data": NON_FINITE}
        for n, t in (("x", "FP32"), ("d", "FP64"), ("h", "FP16"))
    ]
    response = post(f"{live_web.url}/v2/models/{non_finite}/infer", {"inputs": inputs}, alice_key)
    assert response.status_code == 200, response.text
    assert_outputs(json.loads(response.text)["outputs"])


def test_tritonclient_round_trips_non_finite_values_as_json(
    live_web, celery_worker_process, alice_key, non_finite
):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=live_web.url.removeprefix("http://"))
    values = {"x": np.float32, "d": np.float64, "h": np.float16}
    datatypes = {"x": "FP32", "d": "FP64", "h": "FP16"}
    infer_inputs = []
    for name, dtype in values.items():
        tensor = httpclient.InferInput(name, [4], datatypes[name])
        tensor.set_data_from_numpy(np.array(NON_FINITE, dtype=dtype), binary_data=False)
        infer_inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput(n, binary_data=False) for n in EXPECTED]
    result = client.infer(
        non_finite, infer_inputs, outputs=outputs, headers={"Authorization": f"Bearer {alice_key}"}
    )
    for name, want in EXPECTED.items():
        assert same(result.as_numpy(name).astype(np.float64).tolist(), want)


def test_non_finite_values_in_integer_inputs_are_a_400(live_web, celery_worker_process, alice_key, alice):
    builders.publish(owner=alice, name="nf-mixed", data=builders.mixed_onnx())
    inputs = builders.mixed_inputs(batch=1)
    body = {"inputs": {name: array.tolist() for name, array in inputs.items()}}
    body["inputs"]["text"] = [v.decode() if isinstance(v, bytes) else v for v in body["inputs"]["text"]]
    body["inputs"]["ids"] = [[math.nan, math.inf]]
    response = post(f"{live_web.url}/api/v1/models/alice/nf-mixed/predict", body, alice_key)
    assert response.status_code == 400, response.text
    assert "ids" in response.text
