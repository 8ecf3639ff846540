"""/v2/: Open Inference Protocol metadata, readiness and inference (JSON and binary tensor data)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from inference.codec import tensor_to_bytes
from inference.models import Prediction

from . import builders
from .conftest import assert_same, local_run, post_json

DATATYPES = {"x": "FP32", "h": "FP16", "flag": "BOOL", "ids": "INT64", "text": "BYTES", "small": "UINT8"}


def oip_inputs(inputs: dict[str, np.ndarray]) -> list[dict]:
    return [
        {
            "name": n,
            "datatype": DATATYPES[n],
            "shape": list(a.shape),
            "data": [v.decode() for v in a.ravel()] if a.dtype == object else a.ravel().tolist(),
        }
        for n, a in inputs.items()
    ]


def test_server_metadata_lists_the_binary_extension(client):
    for path in ("/v2", "/v2/"):
        body = client.get(path).json()
        assert body["name"] == "modelport" and "binary_tensor_data" in body["extensions"]


@pytest.mark.django_db
def test_model_metadata_of_a_public_model_needs_no_key(client, mixed):
    body = client.get("/v2/models/alice/mixed").json()
    assert body["name"] == "alice/mixed"
    assert body["versions"] == ["1"]
    assert body["platform"] == "onnxruntime_onnx"
    assert body["inputs"][0] == {"name": "x", "datatype": "FP32", "shape": [-1, 3]}
    assert [o["name"] for o in body["outputs"]] == ["y", "h2", "notflag", "idsum", "text_out", "small_out"]
    assert client.get("/v2/models/alice/mixed/versions/1").status_code == 200
    assert client.get("/v2/models/alice/mixed/versions/2").json() == {
        "error": "No model alice/mixed version 2 to run."
    }


@pytest.mark.django_db
def test_a_private_model_is_404_without_the_owners_key(client, alice, alice_key, bob_key):
    builders.publish(owner=alice, name="secret", data=builders.digits_onnx(), visibility="private")
    assert client.get("/v2/models/alice/secret").status_code == 404
    assert client.get("/v2/models/alice/secret", HTTP_AUTHORIZATION=f"Bearer {bob_key}").status_code == 404
    response = client.get("/v2/models/alice/secret", HTTP_AUTHORIZATION=f"Bearer {alice_key}")
    assert response.status_code == 200


@pytest.mark.django_db
def test_infer_needs_a_key_with_the_predict_scope(client, alice, mixed):
    from portal.models import ApiKey

    body = {"inputs": oip_inputs(builders.mixed_inputs(batch=1))}
    response = post_json(client, "/v2/models/alice/mixed/infer", body)
    assert response.status_code == 401 and "API key" in response.json()["error"]
    assert post_json(client, "/v2/models/alice/mixed/infer", body, "mp_nope_bad").status_code == 401
    _, read_only = ApiKey.issue(user=alice, name="ro", scopes=["read"])
    response = post_json(client, "/v2/models/alice/mixed/infer", body, read_only)
    assert response.status_code == 403 and "predict" in response.json()["error"]


@pytest.mark.django_db(transaction=True)
def test_infer_with_json_tensors(client, alice_key, mixed, celery_worker_process):
    inputs = builders.mixed_inputs(batch=2, seed=11)
    response = post_json(
        client, "/v2/models/alice/mixed/infer", {"id": "req-1", "inputs": oip_inputs(inputs)}, alice_key
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model_name"] == "alice/mixed" and body["model_version"] == "1" and body["id"] == "req-1"
    expected = local_run(builders.mixed_onnx(), inputs)
    for output in body["outputs"]:
        assert output["shape"] == list(expected[output["name"]].shape)
        assert_same(
            expected[output["name"]],
            np.asarray(output["data"], dtype=object if output["datatype"] == "BYTES" else None),
        )


@pytest.mark.django_db(transaction=True)
def test_infer_with_binary_tensors_in_and_out(client, alice_key, mixed, celery_worker_process):
    inputs = builders.mixed_inputs(batch=2, seed=12)
    chunks = [tensor_to_bytes(a) for a in inputs.values()]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": n,
                    "datatype": DATATYPES[n],
                    "shape": list(a.shape),
                    "parameters": {"binary_data_size": len(c)},
                }
                for (n, a), c in zip(inputs.items(), chunks, strict=True)
            ],
            "outputs": [
                {"name": "h2", "parameters": {"binary_data": True}},
                {"name": "text_out"},
                {"name": "idsum", "parameters": {"binary_data": True}},
            ],
        }
    ).encode()
    response = client.post(
        "/v2/models/alice/mixed/infer",
        header + b"".join(chunks),
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
    )
    assert response.status_code == 200, response.content
    length = int(response["Inference-Header-Content-Length"])
    body = json.loads(response.content[:length])
    binary = response.content[length:]
    expected = local_run(builders.mixed_onnx(), inputs)
    h2, text_out, idsum = body["outputs"]
    assert [o["name"] for o in body["outputs"]] == ["h2", "text_out", "idsum"]
    size = h2["parameters"]["binary_data_size"]
    np.testing.assert_array_equal(np.frombuffer(binary[:size], dtype="<f2").reshape(2, 2), expected["h2"])
    np.testing.assert_array_equal(np.frombuffer(binary[size:], dtype="<i8"), expected["idsum"])
    assert text_out["data"] == [v for v in expected["text_out"]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (b'{"inputs": [', {}, "Malformed JSON"),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], '
            b'"parameters": {"binary_data_size": 12}}]}',
            {},
            "no Inference-Header-Content-Length",
        ),
        (
            b'{"inputs": [{"name": "nope", "datatype": "FP32", "shape": [1], "data": [1]}]}',
            {},
            "unknown input 'nope'",
        ),
        (
            b'{"inputs": [{"name": "small", "datatype": "UINT8", "shape": [1], "data": [300]}]}',
            {},
            "out of range",
        ),
        (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}]}', {}, "needs 3"),
        (b'{"inputs": []}', {}, "missing input 'x'"),
        (b'{"inputs": [], "outputs": [{"name": "zzz"}]}', {}, "Unknown output"),
    ],
)
def test_infer_rejects_bad_requests_with_an_error_naming_the_problem(
    client, alice_key, mixed, body, headers, message
):
    response = client.post(
        "/v2/models/alice/mixed/infer",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
        **headers,
    )
    assert response.status_code == 400
    assert message in response.json()["error"], response.json()
    assert not Prediction.objects.exists()


@pytest.mark.django_db
def test_binary_sizes_that_do_not_add_up_are_a_400(client, alice_key, mixed):
    header = json.dumps(
        {
            "inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}
            ]
        }
    ).encode()
    response = client.post(
        "/v2/models/alice/mixed/infer",
        header + struct.pack("<2f", 1, 2),
        content_type="application/octet-stream",
        HTTP_AUTHORIZATION=f"Bearer {alice_key}",
        HTTP_INFERENCE_HEADER_CONTENT_LENGTH=str(len(header)),
    )
    assert response.status_code == 400 and "runs past the end" in response.json()["error"]


@pytest.mark.django_db(transaction=True)
def test_a_ready_model_is_ready(client, mixed, celery_worker_process):
    assert client.get("/v2/models/alice/mixed/ready").status_code == 200
    assert client.get("/v2/models/alice/missing/ready").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_infer_runs_a_torchscript_model(client, alice, alice_key, celery_worker_process):
    import io

    import torch

    data = builders.torchscript_model()
    builders.publish(
        owner=alice, name="scorer", data=data, format="torchscript", signature=builders.TORCHSCRIPT_SIGNATURE
    )
    assert client.get("/v2/models/alice/scorer").json()["platform"] == "pytorch_libtorch"
    x = np.random.default_rng(4).normal(size=(2, 4)).astype(np.float32)
    idx = np.array([7, -(2**50)], dtype=np.int64)
    body = {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": x.ravel().tolist()},
            {"name": "idx", "datatype": "INT64", "shape": [2], "data": idx.tolist()},
        ]
    }
    response = post_json(client, "/v2/models/alice/scorer/infer", body, alice_key)
    assert response.status_code == 200, response.content
    probs, idx2 = torch.jit.load(io.BytesIO(data))(torch.from_numpy(x), torch.from_numpy(idx))
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert_same(probs.detach().numpy(), np.asarray(outputs["probs"]["data"]))
    assert outputs["idx2"]["datatype"] == "INT64" and outputs["idx2"]["data"] == [14, -(2**51)]


@pytest.mark.django_db(transaction=True)
def test_a_job_nobody_ran_in_time_is_failed_with_its_503_and_not_run_later(
    client, alice, alice_key, mixed, settings
):
    """Without a worker serving the model's pool the call becomes a job; when /v2 gives up on it (503), the
    job is failed then: nobody will read its answer, so it must not run and be charged later."""
    import uuid

    from django.db.models import Sum

    from inference.scheduling import queue
    from inference.services import prediction_execute
    from portal.models import UsageDay

    tag = uuid.uuid4().hex[:8]
    settings.INFERENCE_REDIS_PREFIX = f"mp:nobody-{tag}:"  # no worker's heartbeat: the job path
    settings.INFERENCE_JOB_QUEUE = f"nobody-{tag}"  # a Celery queue no worker consumes
    settings.INFERENCE_LINK = False
    settings.PREDICTION_TIME_LIMIT = 0.5
    queue.reset_client()
    try:
        inputs = builders.mixed_inputs(batch=1, seed=3)
        response = post_json(
            client, "/v2/models/alice/mixed/infer", {"inputs": oip_inputs(inputs)}, alice_key
        )
    finally:
        queue.reset_client()
    assert response.status_code == 503 and response["Retry-After"] == "1"
    assert "not run" in response.json()["error"]
    job = Prediction.objects.get(user=alice)
    assert job.status == "failed" and "not run" in job.error
    # A worker that takes the job from its queue later does not run it.
    prediction_execute(prediction_id=str(job.id), run=lambda header, tensors: pytest.fail("it ran"))
    job.refresh_from_db()
    assert job.status == "failed" and job.attempts == 0
    usage = UsageDay.objects.filter(user=alice).aggregate(requests=Sum("requests"), compute=Sum("compute_ms"))
    assert usage["requests"] == 1 and not usage["compute"]
