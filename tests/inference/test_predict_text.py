"""POST /predict with {"text": …}: the server tokenizes for text models, and refuses text it cannot take."""

from __future__ import annotations

import numpy as np
import pytest

from . import builders
from .conftest import post_json
from .text_builders import local_embeddings, publish_text_model, tiny_encoder_onnx, wordpiece_tokenizer_json

URL = "/api/v1/models/alice/{}/predict"
TOPICS = ["finance", "food", "sports"]


@pytest.fixture
def encoder(alice):
    return publish_text_model(owner=alice, name="encoder", task="feature-extraction")


@pytest.fixture
def classifier(alice):
    return publish_text_model(owner=alice, name="classifier", task="text-classification", labels=TOPICS)


@pytest.mark.django_db(transaction=True)
def test_a_very_long_text_is_truncated_to_the_tokenizers_maximum(
    client, alice_key, encoder, celery_worker_process
):
    long_text = "the cat sat on the mat " * 5000
    response = post_json(client, URL.format("encoder"), {"text": long_text}, alice_key)
    assert response.status_code == 200, response.content
    [states] = response.json()["outputs"]
    assert states["shape"] == [1, 32, 16]  # the tokenizer's truncation: 32 tokens
    [expected], _ = local_embeddings(tiny_encoder_onnx(), wordpiece_tokenizer_json(), [long_text])
    np.testing.assert_allclose(response.json()["embeddings"][0], expected, atol=1e-4)


@pytest.mark.django_db(transaction=True)
def test_a_classifier_answers_with_top_per_text(client, alice_key, classifier, celery_worker_process):
    one = post_json(client, URL.format("classifier"), {"text": "fresh pasta"}, alice_key).json()
    assert [entry["label"] for entry in one["top"]] == sorted(
        TOPICS, key=lambda label: -next(e["score"] for e in one["top"] if e["label"] == label)
    )
    assert abs(sum(entry["score"] for entry in one["top"]) - 1) < 1e-5
    several = post_json(
        client, URL.format("classifier"), {"text": ["fresh pasta", "the striker scored"]}, alice_key
    ).json()
    assert len(several["top"]) == 2 and all(len(top) == 3 for top in several["top"])
    assert several["top"][0] == one["top"]
    assert "embeddings" not in several


@pytest.mark.django_db
@pytest.mark.parametrize(
    "text, message",
    [
        (42, "must be a string or a list of strings"),
        ({"a": 1}, "must be a string or a list of strings"),
        (["ok", 3], "must be a string or a list of strings"),
        ([], "empty list"),
    ],
)
def test_it_rejects_text_of_the_wrong_type(client, alice_key, encoder, text, message):
    response = post_json(client, URL.format("encoder"), {"text": text}, alice_key)
    assert response.status_code == 400
    assert message in response.json()["text"][0]


@pytest.mark.django_db
def test_it_rejects_text_for_a_model_without_a_tokenizer(client, alice_key, alice):
    builders.publish(owner=alice, name="mixed", data=builders.mixed_onnx())
    response = post_json(client, URL.format("mixed"), {"text": "hello"}, alice_key)
    assert response.status_code == 400
    assert "has no tokenizer" in response.json()["text"][0]


@pytest.mark.django_db
def test_it_rejects_text_and_inputs_together(client, alice_key, encoder):
    response = post_json(client, URL.format("encoder"), {"text": "a", "inputs": {}}, alice_key)
    assert response.status_code == 400
    assert "one of 'inputs', 'image' or 'text'" in response.json()["inputs"][0]


@pytest.mark.django_db
def test_v2_rejects_a_text_input_that_is_not_bytes(client, alice_key, encoder):
    body = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    response = post_json(client, "/v2/models/alice/encoder/infer", body, alice_key)
    assert response.status_code == 400
    assert "BYTES" in response.json()["error"]


@pytest.mark.django_db
def test_tokenizers_are_sent_to_their_confined_child_once_per_content(alice, monkeypatch):
    from inference import services, text
    from marketplace import files

    first = publish_text_model(owner=alice, name="one", task="feature-extraction")
    second = publish_text_model(owner=alice, name="two", task="feature-extraction")
    assert first.tokenizer_sha256 == second.tokenizer_sha256
    targets = [services.target_find(owner="alice", name=n, number=None, user=alice) for n in ("one", "two")]
    reads = []
    read_bytes = files.read_bytes
    monkeypatch.setattr(files, "read_bytes", lambda *a, **k: reads.append(a) or read_bytes(*a, **k))
    one, two = (text.text_request(target, "the same words") for target in targets)
    assert len(reads) == 1
    assert one.tensors.keys() == two.tensors.keys()
    assert all((one.tensors[name] == two.tensors[name]).all() for name in one.tensors)
