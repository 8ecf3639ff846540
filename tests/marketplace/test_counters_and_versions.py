"""Counters survive concurrent edits; who sees which version, and which is the latest, through the API and
the model page (the rules of marketplace.selectors)."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.test import APIClient

from marketplace import services
from marketplace.models import Model, ModelVersion

pytestmark = pytest.mark.django_db


def test_an_edit_keeps_the_downloads_counted_while_it_was_made(alice_client, publish):
    model = publish()
    stale = Model.objects.get(pk=model.pk)  # the edit's copy, read before the download below
    assert alice_client.get("/api/v1/models/alice/tiny/versions/1/file").status_code == 200
    services.model_update(model=stale, description="edited")
    body = alice_client.get("/api/v1/models/alice/tiny").json()
    assert (body["downloads"], body["description"]) == (1, "edited")


def test_runs_are_added_not_overwritten(client, publish):
    model = publish()
    services.models_record_runs(runs={model.pk: 2})
    services.model_update(model=model, license="MIT")  # holds runs == 0 in memory
    services.models_record_runs(runs={model.pk: 3})
    assert client.get("/api/v1/models/alice/tiny").json()["runs"] == 5


@pytest.fixture
def three_versions(publish):
    """v1 ready, v2 ready with another signature, v3 rejected."""
    model = publish()
    v1 = model.versions.get()
    newer = {"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}], "outputs": []}
    for number, status, signature in ((2, "ready", newer), (3, "rejected", {})):
        ModelVersion.objects.create(
            model=model,
            number=number,
            file=v1.file.name,
            size=v1.size,
            sha256=v1.sha256,
            status=status,
            format="onnx" if status == "ready" else "",
            signature=signature,
            reason="not a model" if status == "rejected" else "",
        )
    return model, newer


def test_the_owner_sees_every_version_and_others_the_ready_ones(alice_client, bob, three_versions):
    anonymous = Client()
    as_bob = APIClient()
    as_bob.force_authenticate(bob)
    owner_view = alice_client.get("/api/v1/models/alice/tiny/versions").json()
    assert [(v["number"], v["status"]) for v in owner_view] == [(3, "rejected"), (2, "ready"), (1, "ready")]
    for visitor in (anonymous, as_bob):
        assert [v["number"] for v in visitor.get("/api/v1/models/alice/tiny/versions").json()] == [2, 1]
        assert [v["number"] for v in visitor.get("/api/v1/models/alice/tiny").json()["versions"]] == [2, 1]
        assert visitor.get("/api/v1/models/alice/tiny/versions/3").status_code == 404
    assert alice_client.get("/api/v1/models/alice/tiny/versions/3").json()["reason"] == "not a model"
    assert [v["number"] for v in alice_client.get("/api/v1/models/alice/tiny").json()["versions"]] == [
        3,
        2,
        1,
    ]
    page = anonymous.get("/models/alice/tiny/").content.decode()
    assert "v2" in page and "v1" in page and "v3" not in page
    assert "v3" in alice_client.get("/models/alice/tiny/").content.decode()


def test_the_model_shows_the_latest_ready_versions_signature(client, three_versions):
    _, newer = three_versions
    body = client.get("/api/v1/models/alice/tiny").json()
    assert body["signature"] == newer
    assert "pixels" in client.get("/models/alice/tiny/").content.decode()


def test_version_urls_are_the_routes_themselves(client, three_versions):
    version = client.get("/api/v1/models/alice/tiny").json()["versions"][0]
    assert version["url"] == "/api/v1/models/alice/tiny/versions/2"
    assert version["file_url"] == "/api/v1/models/alice/tiny/versions/2/file"
    assert client.get(version["url"]).json()["number"] == 2
    assert client.get(version["file_url"]).status_code == 200
