"""A text encoder end to end on live servers: uploaded with its own tokenizer.json, then plain text in through
/api/v1 (embeddings) and /v2 (tritonclient's BYTES input), compared with tokenizers + ONNX Runtime here."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import requests

from portal.models import ApiKey

from .text_builders import local_embeddings, tiny_encoder_onnx, wordpiece_tokenizer_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today", "a word unseen: zymurgy"]


@pytest.fixture
def uploader_key(alice) -> str:
    return ApiKey.issue(user=alice, name="text", scopes=["read", "predict", "upload"])[1]


@pytest.fixture
def encoder(live_web, celery_worker_process, uploader_key) -> str:
    response = requests.post(
        f"{live_web.url}/api/v1/models",
        headers={"Authorization": f"Bearer {uploader_key}"},
        data={"name": "tiny-encoder", "task": "feature-extraction", "example": "the cat sat on the mat"},
        files={
            "file": ("encoder.onnx", tiny_encoder_onnx()),
            "tokenizer": ("tokenizer.json", wordpiece_tokenizer_json().encode()),
        },
        timeout=120,
    )
    assert response.status_code == 201, response.text
    return "alice/tiny-encoder"


def test_the_version_shows_its_tokenizer(live_web, uploader_key, encoder):
    raw = wordpiece_tokenizer_json().encode()
    response = requests.get(
        f"{live_web.url}/api/v1/models/{encoder}/versions/1",
        headers={"Authorization": f"Bearer {uploader_key}"},
        timeout=30,
    )
    body = response.json()
    assert body["status"] == "ready"
    assert body["tokenizer"] == {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    assert body["example"] == "the cat sat on the mat"


def test_api_v1_embeddings_equal_tokenizers_onnx_runtime_and_mean_pooling(live_web, uploader_key, encoder):
    expected, outputs = local_embeddings(tiny_encoder_onnx(), wordpiece_tokenizer_json(), TEXTS)
    response = requests.post(
        f"{live_web.url}/api/v1/models/{encoder}/predict",
        json={"text": TEXTS},
        headers={"Authorization": f"Bearer {uploader_key}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    embeddings = np.asarray(body["embeddings"])
    assert embeddings.shape == expected.shape
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    [states] = body["outputs"]
    assert states["name"] == "last_hidden_state"
    assert states["shape"] == list(outputs["last_hidden_state"].shape)  # padded to the longest text


def test_one_text_gives_one_embedding(live_web, uploader_key, encoder):
    [expected], _ = local_embeddings(tiny_encoder_onnx(), wordpiece_tokenizer_json(), [TEXTS[0]])
    response = requests.post(
        f"{live_web.url}/api/v1/models/{encoder}/predict",
        json={"text": TEXTS[0]},
        headers={"Authorization": f"Bearer {uploader_key}"},
        timeout=60,
    )
    [embedding] = response.json()["embeddings"]
    np.testing.assert_allclose(embedding, expected, atol=1e-4)


def test_tritonclient_sends_strings_as_a_bytes_input_named_text(live_web, uploader_key, encoder):
    import tritonclient.http as httpclient

    expected, outputs = local_embeddings(tiny_encoder_onnx(), wordpiece_tokenizer_json(), TEXTS)
    client = httpclient.InferenceServerClient(url=live_web.url.removeprefix("http://"))
    text = httpclient.InferInput("text", [len(TEXTS)], "BYTES")
    text.set_data_from_numpy(np.array(TEXTS, dtype=np.object_))
    result = client.infer(
        encoder,
        [text],
        outputs=[
            httpclient.InferRequestedOutput("embeddings"),
            httpclient.InferRequestedOutput("last_hidden_state"),
        ],
        headers={"Authorization": f"Bearer {uploader_key}"},
    )
    np.testing.assert_allclose(result.as_numpy("embeddings"), expected, atol=1e-4)
    np.testing.assert_allclose(result.as_numpy("last_hidden_state"), outputs["last_hidden_state"], atol=1e-4)


def test_a_broken_tokenizer_is_refused_with_the_reason(live_web, uploader_key):
    response = requests.post(
        f"{live_web.url}/api/v1/models",
        headers={"Authorization": f"Bearer {uploader_key}"},
        data={"name": "broken-tokenizer", "task": "feature-extraction"},
        files={
            "file": ("encoder.onnx", tiny_encoder_onnx()),
            "tokenizer": ("tokenizer.json", b'{"model": {"type": "WordPiece"}}'),
        },
        timeout=60,
    )
    assert response.status_code == 415
    assert "tokenizer" in response.json()["detail"]
    assert requests.get(f"{live_web.url}/api/v1/models/alice/broken-tokenizer", timeout=30).status_code == 404
