"""/api/schema/ documents every inference action and validates."""

from __future__ import annotations

import pytest
from django.core.management import call_command


def test_the_schema_validates_without_warnings_and_lists_the_inference_paths(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    text = target.read_text()
    for path in (
        "/api/v1/models/{owner}/{name}/predict:",
        "/api/v1/predictions:",
        "/api/v1/predictions/{id}:",
        "/api/v1/predictions/{id}/cancel:",
    ):
        assert path in text
    assert "respond-async" in text


def test_the_schema_is_served(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/v1/models/{owner}/{name}/predict" in response.json()["paths"]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_open_inference_protocol_paths_are_documented_with_a_body_that_runs(
    client, alice, alice_key, live_web, celery_worker_process
):
    import jsonschema
    import requests

    from . import builders

    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    for path in (
        "/v2/models/{owner}/{name}/infer",
        "/v2/models/{owner}/{name}/versions/{version}/infer",
        "/v2/models/{owner}/{name}",
        "/v2/models/{owner}/{name}/ready",
        "/v2/models/{owner}/{name}/stats",
        "/v2/models/{owner}/{name}/versions/{version}/stats",
        "/v2",
        "/v2/health/live",
    ):
        assert path in schema["paths"], path
    infer = schema["paths"]["/v2/models/{owner}/{name}/infer"]["post"]
    assert {"200", "400", "401", "404", "409", "429", "503"} <= set(infer["responses"])
    versioned = schema["paths"]["/v2/models/{owner}/{name}/versions/{version}/infer"]["post"]
    version = next(p for p in versioned["parameters"] if p["name"] == "version")
    assert version["schema"]["type"] == "integer"  # /versions/<int:n>: Swagger UI refuses "latest"
    example = infer["requestBody"]["content"]["application/json"]["example"]
    # The documented example, sent as it is to a model with one FP32 input x of shape [-1, 3], runs.
    builders.publish(owner=alice, name="example-fit", data=builders.plus_one_onnx())
    answer = requests.post(
        f"{live_web.url}/v2/models/alice/example-fit/infer",
        json=example,
        headers={"Authorization": f"Bearer {alice_key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["data"] == pytest.approx([1.1, 1.2, 1.3])

    # The read paths answer as documented.
    for path in ("/v2", "/v2/models/{owner}/{name}", "/v2/models/{owner}/{name}/versions/{version}/stats"):
        documented = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        url = path.format(owner="alice", name="example-fit", version=1)
        answer = requests.get(live_web.url + url, timeout=30)
        assert answer.status_code == 200, answer.text
        jsonschema.validate(answer.json(), documented)

    # So do /api/v1's predict examples (the first is Swagger UI's "Try it out" default body).
    predict = schema["paths"]["/api/v1/models/{owner}/{name}/predict"]["post"]
    examples = predict["requestBody"]["content"]["application/json"]["examples"]
    assert examples
    for title, example in examples.items():
        answer = requests.post(
            f"{live_web.url}/api/v1/models/alice/example-fit/predict",
            json=example["value"],
            headers={"Authorization": f"Bearer {alice_key}"},
            timeout=60,
        )
        assert answer.status_code == 200, (title, answer.text)
        assert answer.json()["outputs"][0]["data"] == pytest.approx([1.1, 1.2, 1.3]), title
