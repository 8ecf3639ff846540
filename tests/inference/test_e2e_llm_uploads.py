"""GGUF uploads on the live servers: the upload check reads the header in the sandbox and records the card's
summary (`llm`), and refuses truncated, inconsistent or absurd files with 415 and the reason."""

from __future__ import annotations

import uuid

import pytest
import requests

from portal.models import ApiKey

from .llm_builders import hostile_ggufs, smollm2_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def uploader_key(alice) -> str:
    return ApiKey.issue(user=alice, name="llm", scopes=["read", "predict", "upload"])[1]


def upload(url: str, key: str, data: bytes, name: str) -> requests.Response:
    return requests.post(
        f"{url}/api/v1/models",
        headers={"Authorization": f"Bearer {key}"},
        data={"name": name, "task": "text-generation"},
        files={"file": ("model.gguf", data)},
        timeout=300,
    )


def test_a_gguf_upload_becomes_a_chat_model_with_its_header_summary(
    live_web, celery_worker_process, uploader_key
):
    name = f"smol-{uuid.uuid4().hex[:8]}"
    response = upload(live_web.url, uploader_key, smollm2_bytes(), name)
    assert response.status_code == 201, response.text
    version = requests.get(
        f"{live_web.url}/api/v1/models/alice/{name}/versions/1",
        headers={"Authorization": f"Bearer {uploader_key}"},
        timeout=30,
    ).json()
    assert version["status"] == "ready" and version["format"] == "gguf"
    assert version["llm"] == {
        "architecture": "llama",
        "parameters": 134515008,
        "quantization": "Q4_1",
        "context_length": 8192,
        "chat_template": True,
    }


@pytest.mark.parametrize("case", list(hostile_ggufs()))
def test_it_refuses_a_hostile_gguf_with_415_and_the_reason(
    live_web, celery_worker_process, uploader_key, case
):
    response = upload(live_web.url, uploader_key, hostile_ggufs()[case], f"bad-{uuid.uuid4().hex[:8]}")
    assert response.status_code == 415, response.text
    reason = response.json()["detail"]
    expected = {
        "truncated in its tensors": "truncated",
        "truncated in its header": "truncated",
        "wrong magic": "not an ONNX model",
        "unknown version": "version 99",
        "absurd tensor count": "tensors",
        "absurd string length": "bytes long",
    }[case]
    assert expected in reason
