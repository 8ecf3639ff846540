"""/api/schema/ documents every inference action and validates."""

from __future__ import annotations

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
