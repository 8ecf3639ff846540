"""POST /api/v1/models and /api/v1/models/<owner>/<name>/versions, validated by the real worker."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from django.conf import settings

from marketplace.models import Model, ModelVersion

from .conftest import onnx_model_bytes, torch_export_bytes, torchscript_bytes, upload_file

pytestmark = pytest.mark.django_db(transaction=True)

TINY_SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
}


def test_it_uploads_an_onnx_model(api, celery_worker_process):
    content = onnx_model_bytes()
    response = api.post(
        "/api/v1/models",
        {
            "name": "tiny-onnx",
            "file": upload_file(content, "tiny.onnx"),
            "task": "tabular-classification",
            "description": "# Tiny",
            "tags": "demo, tiny",
            "labels": "a,b,c",
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["slug"] == "alice/tiny-onnx"
    assert body["tags"] == ["demo", "tiny"]
    assert body["labels"] == ["a", "b", "c"]
    assert body["format"] == "onnx"
    assert body["signature"] == {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
    }
    [version] = body["versions"]
    assert version["number"] == 1
    assert version["sha256"] == hashlib.sha256(content).hexdigest()
    assert version["size"] == len(content)
    assert version["status"] == "ready"
    [row] = ModelVersion.objects.filter(sha256=version["sha256"])
    assert (Path(settings.MEDIA_ROOT) / row.file.name).read_bytes() == content


def test_it_uploads_a_traced_torchscript_model(api, celery_worker_process):
    content = torchscript_bytes()
    response = api.post(
        "/api/v1/models", {"name": "tiny-ts", "file": upload_file(content, "weights.bin")}, format="multipart"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["format"] == "torchscript"
    assert body["versions"][0]["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["signature"] == {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}],
    }


def test_it_takes_a_signature_field_for_a_scripted_module(api, celery_worker_process):
    content = torchscript_bytes(traced=False)
    response = api.post(
        "/api/v1/models", {"name": "tiny-scripted", "file": upload_file(content, "m.pt")}, format="multipart"
    )
    assert response.status_code == 415
    assert "signature" in response.json()["detail"]
    assert not Model.objects.filter(name="tiny-scripted").exists()

    response = api.post(
        "/api/v1/models",
        {
            "name": "tiny-scripted",
            "file": upload_file(content, "m.pt"),
            "signature": json.dumps(TINY_SIGNATURE),
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["signature"]["inputs"] == TINY_SIGNATURE["inputs"]


def test_it_uploads_a_torch_export_program(api, celery_worker_process):
    content = torch_export_bytes()
    response = api.post(
        "/api/v1/models",
        {"name": "tiny-export", "file": upload_file(content, "model.onnx")},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["format"] == "torch-export"
    assert body["signature"]["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert body["signature"]["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 3]}]


def test_versions_number_up_and_cannot_be_changed(api, celery_worker_process):
    assert (
        api.post(
            "/api/v1/models", {"name": "grows", "file": upload_file(onnx_model_bytes())}, format="multipart"
        ).status_code
        == 201
    )
    second = api.post(
        "/api/v1/models/alice/grows/versions",
        {"file": upload_file(torchscript_bytes(), "v2.pt"), "notes": "now TorchScript"},
        format="multipart",
    )
    assert second.status_code == 201, second.content
    assert second.json()["number"] == 2
    assert second.json()["format"] == "torchscript"
    assert second.json()["notes"] == "now TorchScript"
    third = api.post(
        "/api/v1/models/alice/grows/versions",
        {"file": upload_file(onnx_model_bytes(0.5))},
        format="multipart",
    )
    assert third.json()["number"] == 3

    listed = api.get("/api/v1/models/alice/grows/versions").json()
    assert [v["number"] for v in listed] == [3, 2, 1]
    for method in (api.put, api.patch):
        response = method("/api/v1/models/alice/grows/versions/2", {"notes": "rewritten"}, format="json")
        assert response.status_code == 405
    assert api.delete("/api/v1/models/alice/grows/versions/2").status_code == 405
    assert ModelVersion.objects.get(model__name="grows", number=2).notes == "now TorchScript"
    assert api.get("/api/v1/models/alice/grows").json()["format"] == "onnx"


def test_a_rejected_later_version_is_recorded_with_its_reason(api, celery_worker_process):
    assert (
        api.post(
            "/api/v1/models", {"name": "keeps", "file": upload_file(onnx_model_bytes())}, format="multipart"
        ).status_code
        == 201
    )
    truncated = onnx_model_bytes()[:40]
    response = api.post(
        "/api/v1/models/alice/keeps/versions", {"file": upload_file(truncated)}, format="multipart"
    )
    assert response.status_code == 415
    rejected = api.get("/api/v1/models/alice/keeps/versions/2").json()
    assert rejected["status"] == "rejected"
    assert rejected["reason"] == response.json()["detail"]
    assert api.get("/api/v1/models/alice/keeps/versions/2/file").status_code == 404
    assert api.get("/api/v1/models/alice/keeps").json()["signature"]["inputs"][0]["name"] == "features"


def test_it_refuses_an_upload_over_the_limit_with_413(api, settings):
    settings.MODEL_UPLOAD_MAX_BYTES = 100
    response = api.post(
        "/api/v1/models", {"name": "big", "file": upload_file(onnx_model_bytes())}, format="multipart"
    )
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]
    assert not Model.objects.filter(name="big").exists()


def test_it_refuses_a_request_body_far_over_the_limit_before_reading_it(api, settings):
    settings.MODEL_UPLOAD_MAX_BYTES = 10
    response = api.post(
        "/api/v1/models", {"name": "big", "file": upload_file(bytes(3 << 20))}, format="multipart"
    )
    assert response.status_code == 413


def test_a_key_without_the_upload_scope_gets_403(alice, client):
    from portal.models import ApiKey

    _key, plaintext = ApiKey.issue(user=alice, name="reader", scopes=["read"])
    response = client.post(
        "/api/v1/models",
        {"name": "nope", "file": upload_file(onnx_model_bytes())},
        HTTP_AUTHORIZATION=f"Bearer {plaintext}",
    )
    assert response.status_code == 403
    assert "upload" in response.json()["detail"]


def test_anonymous_uploads_get_401(client):
    response = client.post("/api/v1/models", {"name": "nope", "file": upload_file(onnx_model_bytes())})
    assert response.status_code == 401


def test_it_refuses_a_duplicate_name(api, publish):
    publish("taken")
    response = api.post(
        "/api/v1/models", {"name": "TAKEN", "file": upload_file(onnx_model_bytes())}, format="multipart"
    )
    assert response.status_code == 400
    assert "name" in response.json()


def test_a_task_enqueued_by_a_web_request_runs_in_the_worker_process(api, celery_worker_process):
    response = api.post(
        "/api/v1/models",
        {"name": "via-worker", "file": upload_file(onnx_model_bytes(0.25))},
        format="multipart",
    )
    assert response.status_code == 201
    version = ModelVersion.objects.get(model__name="via-worker")
    assert version.status == "ready"
    log = celery_worker_process.log()
    assert "marketplace.validate_version" in log
    assert f"validated version id={version.pk} (alice/via-worker v1): ready" in log
