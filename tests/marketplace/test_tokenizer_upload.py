"""The `tokenizer` upload field: checked with `tokenizers` before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from marketplace.models import Model
from tests.inference.text_builders import tiny_encoder_onnx, wordpiece_tokenizer_json

from .conftest import upload_file

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
