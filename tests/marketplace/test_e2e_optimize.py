"""POST /api/v1/models/<owner>/<name>/versions/<n>/optimize through the real worker: a quantized version made,
measured and validated in the sandbox, published as the next version, and hostile files that fail cleanly."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import onnxruntime
import pytest
from django.conf import settings
from rest_framework.test import APIClient

from inference import services as inference_services
from marketplace.models import ModelVersion
from portal.models import ApiKey

from . import conftest as build
from .conftest import torchscript_bytes, upload_file
from .optimize_models import (
    digits_example,
    digits_split,
    endless_loop_on_nonzero_inputs,
    memory_bomb_on_nonzero_inputs,
    near_tie_classifier,
    onnx_ops,
    trained_mlp,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LABELS = ",".join(str(digit) for digit in range(10))


@pytest.fixture(autouse=True)
def fresh_lookup_caches():
    inference_services.targets_forget()
    yield
    inference_services.targets_forget()


def example_field() -> str:
    return json.dumps(digits_example())


def upload(api, name: str, content: bytes, filename: str = "model.onnx", **fields) -> dict:
    response = api.post(
        "/api/v1/models", {"name": name, "file": upload_file(content, filename), **fields}, format="multipart"
    )
    assert response.status_code == 201, response.content
    return response.json()


def optimize(api, slug: str, number: int = 1, method: str = "dynamic-int8"):
    return api.post(f"/api/v1/models/{slug}/versions/{number}/optimize", {"method": method}, format="json")


def settled(api, url: str, timeout: float = 180) -> dict:
    """The version at `url` once it is no longer `validating` (the worker quantizes, measures, validates)."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        if body["status"] != "validating":
            return body
        assert time.monotonic() < deadline, f"the optimized version never settled: {body}"
        time.sleep(0.25)


def predict(client, key: str, slug: str, body: dict) -> dict:
    response = client.post(
        f"/api/v1/models/{slug}/predict",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_an_mlp_gets_a_smaller_quantized_version_that_agrees_and_answers(
    api, alice, client, celery_worker_process
):
    content, _accuracy = trained_mlp()
    upload(api, "mlp", content, task="tabular-classification", labels=LABELS, example=example_field())

    response = optimize(api, "alice/mlp")
    assert response.status_code == 202, response.content
    started = response.json()
    assert started["number"] == 2 and started["status"] == "validating"
    assert started["url"] == "/api/v1/models/alice/mlp/versions/2"
    assert response["Location"] == started["url"]

    version = settled(api, started["url"])
    assert version["status"] == "ready", version["reason"]
    assert version["derived_from"] == 1
    assert version["format"] == "onnx"
    measured = version["optimization"]
    assert measured["method"] == "dynamic-int8"
    assert measured["size_before"] == len(content)
    assert measured["size_after"] == version["size"] < len(content)
    assert measured["agreement"] >= 0.95
    assert measured["inputs"] >= settings.MODEL_OPTIMIZATION_INPUTS
    assert measured["low_agreement"] is False
    # Measured, not assumed: both models ran the same number of times, over several timed repetitions.
    assert math.isfinite(measured["speedup"]) and measured["speedup"] > 0
    assert measured["runs"]["original"] == measured["runs"]["optimized"] > 0
    assert measured["repetitions"] >= 3
    assert all(seconds > 0 for seconds in measured["median_seconds"].values())
    assert 0 < measured["max_abs_diff"] < 1
    assert "smaller" in measured["summary"] and "top label unchanged on" in measured["summary"]

    # The stored file is the quantized graph, and validated like an upload (it ran the example).
    download = api.get(f"{started['url']}/file")
    assert download.status_code == 200
    quantized = b"".join(download.streaming_content)
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= onnx_ops(quantized)
    assert version["example"] == digits_example()

    # It is the latest ready version now, so predict runs it by default; version 1 stays one `version` away.
    key = ApiKey.issue(user=alice, name="predict", scopes=["read", "predict"])[1]
    pixels = np.asarray(digits_split()[1][:8], dtype=np.float32)
    default = predict(client, key, "alice/mlp", {"inputs": {"pixels": pixels.tolist()}})
    assert default["version"] == 2
    expected = onnxruntime.InferenceSession(quantized).run(None, {"pixels": pixels})[0]
    np.testing.assert_allclose(np.reshape(default["outputs"][0]["data"], (8, 10)), expected, rtol=1e-5)
    original = predict(client, key, "alice/mlp", {"inputs": {"pixels": pixels.tolist()}, "version": 1})
    assert original["version"] == 1

    page = client.get("/models/alice/mlp/")
    assert "Optimized from v1 (dynamic-int8)" in page.content.decode()
    assert measured["summary"] in page.content.decode()


def test_static_int8_calibrates_on_the_example_and_generated_inputs(api, celery_worker_process):
    content, _accuracy = trained_mlp()
    upload(api, "mlp", content, task="tabular-classification", labels=LABELS, example=example_field())
    response = optimize(api, "alice/mlp", method="static-int8")
    assert response.status_code == 202, response.content
    version = settled(api, response.json()["url"])
    assert version["status"] == "ready", version["reason"]
    assert version["optimization"]["method"] == "static-int8"
    assert version["size"] < len(content)
    assert version["optimization"]["agreement"] >= 0.95
    quantized = b"".join(api.get(f"{response.json()['url']}/file").streaming_content)
    assert {"QuantizeLinear", "DequantizeLinear"} <= onnx_ops(quantized)


def test_a_version_whose_top_labels_change_is_published_but_never_the_default(
    api, alice, client, celery_worker_process
):
    upload(api, "near-tie", near_tie_classifier(), task="tabular-classification", labels=LABELS)
    response = optimize(api, "alice/near-tie")
    assert response.status_code == 202, response.content
    version = settled(api, response.json()["url"])
    assert version["status"] == "ready", version["reason"]
    measured = version["optimization"]
    assert measured["agreement"] < settings.MODEL_OPTIMIZATION_MIN_AGREEMENT
    assert measured["low_agreement"] is True
    assert ModelVersion.objects.get(model__name="near-tie", number=2).low_agreement

    key = ApiKey.issue(user=alice, name="predict", scopes=["read", "predict"])[1]
    features = {"features": [[0.5] * 16]}
    assert predict(client, key, "alice/near-tie", {"inputs": features})["version"] == 1
    assert predict(client, key, "alice/near-tie", {"inputs": features, "version": 2})["version"] == 2
    page = client.get("/models/alice/near-tie/").content.decode()
    assert "low agreement" in page and "not the default for predict" in page


def test_only_the_owner_can_optimize(api, alice, bob, client, celery_worker_process):
    upload(api, "public-mlp", near_tie_classifier())
    upload(api, "private-mlp", near_tie_classifier(), visibility="private")
    as_bob = APIClient()
    as_bob.credentials(
        HTTP_AUTHORIZATION=f"Bearer {ApiKey.issue(user=bob, name='b', scopes=['read', 'upload'])[1]}"
    )
    public = optimize(as_bob, "alice/public-mlp")
    assert public.status_code == 403 and "owner" in public.json()["detail"]
    assert optimize(as_bob, "alice/private-mlp").status_code == 404
    assert optimize(APIClient(), "alice/public-mlp").status_code == 401
    read_only = APIClient()
    read_only.credentials(
        HTTP_AUTHORIZATION=f"Bearer {ApiKey.issue(user=alice, name='r', scopes=['read'])[1]}"
    )
    assert optimize(read_only, "alice/public-mlp").status_code == 403
    client.force_login(bob)
    assert client.post("/models/alice/public-mlp/versions/1/optimize/").status_code == 404
    assert ModelVersion.objects.filter(number__gt=1).count() == 0


def test_a_torchscript_version_gets_415_saying_why(api, celery_worker_process):
    upload(api, "tiny-ts", torchscript_bytes(), "model.pt")
    response = optimize(api, "alice/tiny-ts")
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "TorchScript" in detail and "only ONNX versions can be optimized" in detail
    assert "torch.onnx.export" in detail
    assert ModelVersion.objects.filter(model__name="tiny-ts").count() == 1


# --- hostile files ------------------------------------------------------------------------------------------


def test_a_model_whose_measurement_needs_gigabytes_fails_cleanly_under_the_limit(api, celery_worker_process):
    # It passed upload: its all-zero example allocates nothing. The optimizer's generated inputs are not all
    # zero, so the original asks ONNX Runtime for ~4 GB, over the sandbox's address-space limit.
    upload(
        api,
        "bomb",
        memory_bomb_on_nonzero_inputs(),
        task="tabular-classification",
        example=json.dumps({"features": [[0, 0, 0, 0]]}),
    )
    response = optimize(api, "alice/bomb")
    assert response.status_code == 202
    version = settled(api, response.json()["url"])
    assert version["status"] == "rejected"
    assert version["reason"].startswith("Optimization failed:") and "memory" in version["reason"]
    assert version["file_url"] is None and version["optimization"] == {
        "method": "dynamic-int8",
        "low_agreement": False,
        "summary": "",
    }
    # The worker lived through it: the next job runs.
    upload(api, "after-bomb", near_tie_classifier(), task="tabular-classification")
    assert settled(api, optimize(api, "alice/after-bomb").json()["url"])["status"] == "ready"


def test_a_model_whose_measurement_never_ends_is_stopped_at_the_time_limit(api, celery_worker_process):
    # Passed upload on its all-zero example; on generated inputs its Loop would count to 10^12.
    upload(
        api,
        "endless",
        endless_loop_on_nonzero_inputs(),
        task="tabular-classification",
        example=json.dumps({"features": [[0, 0, 0, 0]]}),
    )
    response = optimize(api, "alice/endless")
    assert response.status_code == 202
    version = settled(api, response.json()["url"], timeout=settings.MODEL_VALIDATION_TIMEOUT_SECONDS * 3)
    assert version["status"] == "rejected"
    # The worker's limit (the suite starts it with MODEL_VALIDATION_TIMEOUT_SECONDS from tests' conftest).
    assert re.fullmatch(
        r"Optimization failed: Optimization (took longer than \d+ s and was stopped|ran out of its CPU-time "
        r"limit)\.",
        version["reason"],
    ), version["reason"]
    assert version["file_url"] is None


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        (build.onnx_with_external_data("/etc/hostname"), "external data"),
        (build.onnx_unknown_domain(), "evil.example"),
    ],
    ids=["reads another file", "needs an operator library"],
)
def test_a_hostile_file_that_got_into_storage_is_refused_by_the_optimizer(
    api, publish, content, phrase, celery_worker_process
):
    # The upload check refuses these; here they are stored as ready versions directly (as if an older check
    # had let them through), and the optimizer's child checks the graph again before anything loads it.
    model = publish("smuggled", content=content)
    response = optimize(api, model.slug)
    assert response.status_code == 202
    version = settled(api, response.json()["url"])
    assert version["status"] == "rejected"
    assert phrase in version["reason"]
    assert version["size"] == 0 and version["file_url"] is None  # nothing was made, nothing kept
