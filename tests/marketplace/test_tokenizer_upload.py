"""The `tokenizer` upload field: checked with `tokenizers` before anything is stored."""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path

import pytest
from django.conf import settings

from marketplace.models import Model, ModelVersion
from tests.inference.text_builders import tiny_encoder_onnx, wordpiece_tokenizer_json

from .conftest import onnx_model_bytes, upload_file

pytestmark = pytest.mark.django_db


def upload(api, *, tokenizer: bytes, task: str = "feature-extraction", name: str = "encoder"):
    return api.post(
        "/api/v1/models",
        {
            "name": name,
            "task": task,
            "file": upload_file(tiny_encoder_onnx(), "encoder.onnx"),
            "tokenizer": upload_file(tokenizer, "tokenizer.json"),
        },
        format="multipart",
    )


def stored_files() -> list[Path]:
    root = Path(settings.MEDIA_ROOT)
    return [p for folder in ("models", "tokenizers") for p in (root / folder).rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    "tokenizer, reason",
    [
        (b"not json at all", "does not load with `tokenizers`"),
        (b'{"model": {"type": "WordPiece"}}', "does not load with `tokenizers`"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_it_rejects_a_broken_tokenizer_with_the_reason(api, tokenizer, reason):
    before = stored_files()
    response = upload(api, tokenizer=tokenizer)
    assert response.status_code == 415
    assert reason in response.json()["detail"]
    assert not Model.objects.exists()
    assert stored_files() == before


def test_it_rejects_a_tokenizer_for_a_model_that_takes_no_text(api):
    response = upload(api, tokenizer=wordpiece_tokenizer_json().encode(), task="tabular-regression")
    assert response.status_code == 400
    assert "text models" in response.json()["tokenizer"][0]


def test_it_rejects_a_tokenizer_over_the_size_limit(api, settings):
    settings.TOKENIZER_MAX_BYTES = 1000
    response = upload(api, tokenizer=wordpiece_tokenizer_json().encode())
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["detail"]


@pytest.mark.django_db(transaction=True)
def test_a_version_upload_carries_its_own_tokenizer_and_text_example(api, celery_worker_process):
    first = upload(api, tokenizer=wordpiece_tokenizer_json().encode())
    assert first.status_code == 201, first.content
    assert (
        first.json()["versions"][0]["tokenizer"]["sha256"]
        == hashlib.sha256(wordpiece_tokenizer_json().encode()).hexdigest()
    )
    response = api.post(
        "/api/v1/models/alice/encoder/versions",
        {
            "file": upload_file(tiny_encoder_onnx(), "encoder.onnx"),
            "tokenizer": upload_file(wordpiece_tokenizer_json().encode(), "tokenizer.json"),
            "example": '["the cat sat", "a dog barked"]',
        },
        format="multipart",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["number"] == 2 and body["example"] == ["the cat sat", "a dog barked"]
    assert body["tokenizer"]["size"] == len(wordpiece_tokenizer_json().encode())
    version = ModelVersion.objects.get(model__name="encoder", number=2)
    stored = Path(settings.MEDIA_ROOT) / version.tokenizer.name
    assert stored.read_bytes() == wordpiece_tokenizer_json().encode()
    version.tokenizer_sha256 = "0" * 64
    with pytest.raises(ValueError, match="immutable"):
        version.save()


@pytest.mark.django_db(transaction=True)
def test_it_rejects_a_model_that_cannot_take_the_tokenizers_tokens(api, celery_worker_process):
    # Content no other test stores (files outlive the rows between tests), so its absence afterwards is ours.
    tokenizer = json.dumps(json.loads(wordpiece_tokenizer_json()), indent=1).encode()
    kept = Path(settings.MEDIA_ROOT) / "tokenizers" / hashlib.sha256(tokenizer).hexdigest()[:2]
    response = api.post(
        "/api/v1/models",
        {
            "name": "not-text",
            "task": "feature-extraction",
            "file": upload_file(onnx_model_bytes(), "tabular.onnx"),
            "tokenizer": upload_file(tokenizer, "tokenizer.json"),
        },
        format="multipart",
    )
    assert response.status_code == 415
    assert "no `input_ids` input" in response.json()["detail"]
    assert not Model.objects.filter(name="not-text").exists()
    assert not (kept / f"{hashlib.sha256(tokenizer).hexdigest()}.json").exists()


@pytest.mark.django_db(transaction=True)
def test_the_web_form_takes_a_tokenizer_and_plain_words_as_the_example(alice_client, celery_worker_process):
    response = alice_client.post(
        "/models/new/",
        {
            "name": "web-encoder",
            "file": upload_file(tiny_encoder_onnx(), "encoder.onnx"),
            "tokenizer": upload_file(wordpiece_tokenizer_json().encode(), "tokenizer.json"),
            "task": "feature-extraction",
            "visibility": "public",
            "example": "the cat sat on the mat",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    version = ModelVersion.objects.get(model__name="web-encoder")
    assert version.status == "ready" and version.example_text == ["the cat sat on the mat"]
    page = alice_client.get("/models/alice/web-encoder/").content.decode()
    assert f"sha256 {version.tokenizer_sha256}" in page
    assert 'data-text="true"' in page
    assert "the cat sat on the mat" in html.unescape(page)


@pytest.mark.django_db
def test_the_web_form_refuses_a_broken_tokenizer_with_415(alice_client):
    response = alice_client.post(
        "/models/new/",
        {
            "name": "web-broken",
            "file": upload_file(tiny_encoder_onnx(), "encoder.onnx"),
            "tokenizer": upload_file(b"{not json", "tokenizer.json"),
            "task": "feature-extraction",
            "visibility": "public",
        },
    )
    assert response.status_code == 415
    assert "The tokenizer is not usable" in html.unescape(response.content.decode())
    assert not Model.objects.filter(name="web-broken").exists()
