"""POST /api/v1/models/<owner>/<name>/predict: synchronous results, async jobs, and inputs it refuses."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
from django.test import Client

from inference.models import Prediction

from . import builders
from .conftest import assert_same, local_run, post_json

URL = "/api/v1/models/alice/{}/predict"


def as_lists(inputs: dict[str, np.ndarray]) -> dict:
    return {
        name: [v.decode() for v in a.ravel()] if a.dtype == object else a.tolist()
        for name, a in inputs.items()
    }


def assert_outputs_match(body: dict, expected: dict[str, np.ndarray]) -> None:
    outputs = {o["name"]: o for o in body["outputs"]}
    assert set(outputs) == set(expected)
    for name, array in expected.items():
        assert outputs[name]["shape"] == list(array.shape)
        assert_same(array, np.asarray(outputs[name]["data"], dtype=object if array.dtype == object else None))


@pytest.mark.django_db(transaction=True)
def test_it_returns_the_outputs_onnx_runtime_gives_for_mixed_datatypes(
    client, alice_key, mixed, celery_worker_process
):
    inputs = builders.mixed_inputs(batch=3)
    response = post_json(client, URL.format("mixed"), {"inputs": as_lists(inputs)}, alice_key)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["model"] == "alice/mixed" and body["version"] == 1
    assert body["latency_ms"] > 0
    assert_outputs_match(body, local_run(builders.mixed_onnx(), inputs))
    datatypes = {o["name"]: o["datatype"] for o in body["outputs"]}
    assert datatypes == {
        "y": "FP32",
        "h2": "FP16",
        "notflag": "BOOL",
        "idsum": "INT64",
        "text_out": "BYTES",
        "small_out": "UINT8",
    }
    # The record is written by the worker in its batch, within a second.
    deadline = time.monotonic() + 5
    while not Prediction.objects.filter(id=body["id"], status="succeeded").exists():
        assert time.monotonic() < deadline, "the interactive call was never recorded"
        time.sleep(0.05)
    record = Prediction.objects.get(id=body["id"])
    assert record.source == "api" and record.api_key is not None and record.compute_ms is not None
    assert record.outputs[0]["name"] == "y"


@pytest.mark.django_db(transaction=True)
def test_it_takes_open_inference_protocol_tensors(client, alice_key, mixed, celery_worker_process):
    inputs = builders.mixed_inputs(batch=1, seed=3)
    tensors = [
        {
            "name": n,
            "datatype": d,
            "shape": list(a.shape),
            "data": [v.decode() for v in a.ravel()] if a.dtype == object else a.ravel().tolist(),
        }
        for (n, a), d in zip(inputs.items(), ["FP32", "FP16", "BOOL", "INT64", "BYTES", "UINT8"], strict=True)
    ]
    response = post_json(client, URL.format("mixed"), {"inputs": tensors, "version": 1}, alice_key)
    assert response.status_code == 200, response.content
    assert_outputs_match(response.json(), local_run(builders.mixed_onnx(), inputs))


@pytest.mark.django_db(transaction=True)
def test_it_runs_a_torchscript_model(client, alice, alice_key, celery_worker_process):
    import torch

    data = builders.torchscript_model()
    builders.publish(
        owner=alice, name="scorer", data=data, format="torchscript", signature=builders.TORCHSCRIPT_SIGNATURE
    )
    x = np.random.default_rng(1).normal(size=(3, 4)).astype(np.float32)
    idx = np.array([1, -5, 2**40], dtype=np.int64)
    response = post_json(
        client, URL.format("scorer"), {"inputs": {"x": x.tolist(), "idx": idx.tolist()}}, alice_key
    )
    assert response.status_code == 200, response.content
    module = torch.jit.load(io.BytesIO(data))
    probs, idx2 = module(torch.from_numpy(x), torch.from_numpy(idx))
    assert_outputs_match(response.json(), {"probs": probs.detach().numpy(), "idx2": idx2.numpy()})


@pytest.mark.django_db(transaction=True)
def test_it_classifies_an_image_with_the_models_preprocessing(
    client, alice_key, digits, celery_worker_process
):
    from PIL import Image

    image = Image.new("L", (32, 32), color=255)
    for x in range(12, 20):
        for y in range(4, 28):
            image.putpixel((x, y), 0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    response = post_json(
        client, URL.format("digits"), {"image": base64.b64encode(buffer.getvalue()).decode()}, alice_key
    )
    assert response.status_code == 200, response.content
    body = response.json()
    # The same preprocessing by hand: grayscale, 8x8 bilinear, inverted, scaled by 16/255, flat.
    pixels = np.asarray(image.resize((8, 8), Image.Resampling.BILINEAR), dtype=np.float32)
    expected = local_run(builders.digits_onnx(), {"pixels": ((255 - pixels) * 0.0627451).reshape(1, 64)})
    assert_outputs_match(body, expected)
    logits = expected["logits"][0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert [t["label"] for t in body["top"]] == [str(i) for i in np.argsort(-probabilities)[:5]]
    assert body["top"][0]["score"] == pytest.approx(probabilities.max(), rel=1e-5)


@pytest.mark.django_db(transaction=True)
def test_prefer_respond_async_queues_a_job(client, alice_key, mixed, celery_worker_process):
    inputs = builders.mixed_inputs(batch=2, seed=5)
    response = post_json(
        client, URL.format("mixed"), {"inputs": as_lists(inputs)}, alice_key, HTTP_PREFER="respond-async"
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["url"].endswith(f"/api/v1/predictions/{body['id']}")
    deadline = time.monotonic() + 20
    while True:
        detail = client.get(
            f"/api/v1/predictions/{body['id']}", HTTP_AUTHORIZATION=f"Bearer {alice_key}"
        ).json()
        if detail["status"] == "succeeded":
            break
        assert detail["status"] in {"queued", "running"}, detail
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert_outputs_match(detail, local_run(builders.mixed_onnx(), inputs))
    assert detail["attempts"] == 1 and detail["queue_ms"] is not None and detail["compute_ms"] is not None


@pytest.mark.django_db(transaction=True)
def test_without_redis_a_sync_call_runs_as_a_job_and_waits_for_it(
    client, alice_key, mixed, settings, celery_worker_process
):
    settings.REDIS_URL = ""
    inputs = builders.mixed_inputs(batch=1, seed=7)
    response = post_json(client, URL.format("mixed"), {"inputs": as_lists(inputs)}, alice_key)
    assert response.status_code == 200, response.content
    assert_outputs_match(response.json(), local_run(builders.mixed_onnx(), inputs))
    assert Prediction.objects.get(id=response.json()["id"]).inputs is not None  # it was a job


@pytest.mark.django_db(transaction=True)
def test_a_result_not_ready_within_wait_answers_202_with_a_record(
    client, alice, alice_key, celery_worker_process
):
    builders.publish(owner=alice, name="slow", data=builders.slow_onnx())
    response = post_json(
        client, URL.format("slow") + "?wait=0.2", {"inputs": {"x": [1.0], "n": [1_500_000]}}, alice_key
    )
    assert response.status_code == 202, response.content
    prediction_id = response.json()["id"]
    assert Prediction.objects.filter(id=prediction_id).exists()
    deadline = time.monotonic() + 20
    while Prediction.objects.get(id=prediction_id).status != "succeeded":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert Prediction.objects.get(id=prediction_id).outputs[0]["data"] == [1_500_001.0]


# --- refusals: nothing is queued ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"x": [[1, 2, 3]], "typo": [[1, 2]]}, "unknown input 'typo'"),
        ({"x": [[1, 2, 3]]}, "missing input"),
    ],
)
def test_it_rejects_wrong_input_names(client, alice_key, mixed, inputs, message):
    response = post_json(client, URL.format("mixed"), {"inputs": inputs}, alice_key)
    assert response.status_code == 400
    assert message in str(response.json())
    assert not Prediction.objects.exists()


def mixed_lists(**overrides) -> dict:
    inputs = as_lists(builders.mixed_inputs(batch=1))
    inputs.update(overrides)
    return inputs


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"x": [[1.0, 2.0]]}, "dimension 1 must be 3"),
        ({"x": [1.0, 2.0, 3.0]}, "expects rank 2"),
        ({"x": [[1.0, 2.0], [3.0]]}, "not a rectangular nested list"),
        ({"small": [300]}, "300 is out of range [0, 255]"),
        ({"ids": [[1.5, 2]]}, "1.5 is not an integer"),
        ({"flag": [1]}, "values must be true or false"),
        ({"x": [["a", "b", "c"]]}, "must hold numbers"),
        ({"h": [[70000.0, 1.0]]}, "out of range"),
        ({"text": [5]}, "must be a string"),
    ],
)
def test_it_rejects_shapes_and_values_that_do_not_fit(client, alice_key, mixed, overrides, message):
    response = post_json(client, URL.format("mixed"), {"inputs": mixed_lists(**overrides)}, alice_key)
    assert response.status_code == 400
    assert message in str(response.json()), response.json()
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_it_rejects_a_wrong_datatype_in_oip_form(client, alice_key, mixed):
    tensors = [{"name": "x", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]
    response = post_json(client, URL.format("mixed"), {"inputs": tensors}, alice_key)
    assert response.status_code == 400
    assert "has datatype FP64: the model expects FP32" in str(response.json())
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_it_rejects_malformed_json(client, alice_key, mixed):
    response = post_json(client, URL.format("mixed"), '{"inputs": {"x": [[1, 2', alice_key)
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_it_rejects_a_wait_over_the_maximum(client, alice_key, mixed):
    response = post_json(client, URL.format("mixed") + "?wait=61", {"inputs": mixed_lists()}, alice_key)
    assert response.status_code == 400 and "wait" in response.json()


# --- who may run what ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_private_model_is_404_to_others(client, alice, bob_key):
    builders.publish(owner=alice, name="secret", data=builders.digits_onnx(), visibility="private")
    response = post_json(client, URL.format("secret"), {"inputs": {"pixels": [[0.0] * 64]}}, bob_key)
    assert response.status_code == 404


@pytest.mark.django_db
def test_it_needs_a_key_or_a_session(client, mixed):
    assert post_json(client, URL.format("mixed"), {"inputs": mixed_lists()}).status_code == 401


@pytest.mark.django_db
def test_a_key_without_the_predict_scope_is_403(client, alice, mixed):
    from portal.models import ApiKey

    _, raw = ApiKey.issue(user=alice, name="read only", scopes=["read"])
    response = post_json(client, URL.format("mixed"), {"inputs": mixed_lists()}, raw)
    assert response.status_code == 403 and "predict" in response.json()["detail"]


@pytest.mark.django_db
def test_a_session_user_needs_the_csrf_token(alice, mixed):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    response = post_json(browser, URL.format("mixed"), {"inputs": mixed_lists()})
    assert response.status_code == 403 and "CSRF" in response.json()["detail"]
