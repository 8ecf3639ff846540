"""GET/PATCH/DELETE /api/v1/models[/<owner>/<name>] and version downloads."""

from __future__ import annotations

import hashlib

import pytest

from marketplace.models import Model

from .conftest import onnx_model_bytes

pytestmark = pytest.mark.django_db


def test_it_lists_public_models_with_pagination(client, publish):
    for index in range(5):
        publish(f"model-{index}")
    first = client.get("/api/v1/models?page_size=2&sort=name").json()
    assert first["count"] == 5
    assert [m["name"] for m in first["results"]] == ["model-0", "model-1"]
    assert first["previous"] is None
    assert "page=2" in first["next"]
    last = client.get("/api/v1/models?page_size=2&sort=name&page=3").json()
    assert [m["name"] for m in last["results"]] == ["model-4"]
    assert last["next"] is None


def test_it_filters_by_task_format_tag_and_owner(client, publish, bob):
    publish("digits", task="image-classification", tags=["vision", "mnist"])
    publish("wine", task="tabular-classification", tags=["tabular"], fmt="torchscript")
    publish("bobs", owner=bob, tags=["vision"])
    names = lambda url: sorted(m["name"] for m in client.get(url).json()["results"])  # noqa: E731
    assert names("/api/v1/models?task=image-classification") == ["digits"]
    assert names("/api/v1/models?format=torchscript") == ["wine"]
    assert names("/api/v1/models?tag=vision") == ["bobs", "digits"]
    assert names("/api/v1/models?owner=bob") == ["bobs"]
    assert client.get("/api/v1/models?task=nonsense").status_code == 400


def test_it_searches_name_card_and_tags(client, publish):
    publish("digits", description="Handwritten **digit** recognition on 8x8 images", tags=["vision"])
    publish("wine", description="Wine cultivar from chemistry", tags=["tabular", "chemistry"])
    names = lambda q: sorted(m["name"] for m in client.get("/api/v1/models", {"q": q}).json()["results"])  # noqa: E731
    assert names("handwritten") == ["digits"]
    assert names("digits") == ["digits"]
    assert names("chemistry") == ["wine"]
    assert names("tabular") == ["wine"]
    assert names("giraffe") == []


def test_it_sorts(client, publish):
    publish("a")
    b, c = publish("b"), publish("c")
    Model.objects.filter(pk=b.pk).update(downloads=10, runs=1)
    Model.objects.filter(pk=c.pk).update(downloads=5, runs=50)
    order = lambda s: [m["name"] for m in client.get(f"/api/v1/models?sort={s}").json()["results"]]  # noqa: E731
    assert order("-downloads") == ["b", "c", "a"]
    assert order("-runs") == ["c", "b", "a"]
    assert order("name") == ["a", "b", "c"]
    assert order("-created") == ["c", "b", "a"]


def test_the_detail_has_the_contract_fields(client, publish):
    publish("tiny", description="# Tiny", labels=["x", "y", "z"], license="MIT")
    body = client.get("/api/v1/models/alice/tiny").json()
    for field in (
        "owner",
        "name",
        "slug",
        "task",
        "description",
        "tags",
        "license",
        "labels",
        "visibility",
        "downloads",
        "runs",
        "created_at",
        "updated_at",
        "versions",
        "signature",
    ):
        assert field in body
    assert body["owner"] == "alice"
    assert body["signature"]["inputs"][0]["name"] == "features"
    assert body["versions"][0]["number"] == 1


def test_the_owner_edits_metadata_but_not_owner_or_counters(alice_client, publish):
    publish("tiny")
    response = alice_client.patch(
        "/api/v1/models/alice/tiny",
        {
            "description": "new card",
            "tags": ["a", "b"],
            "downloads": 999,
            "owner": "bob",
            "preprocessing": {"width": 8, "height": 8, "mode": "L", "layout": "flat"},
        },
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["description"] == "new card"
    assert body["tags"] == ["a", "b"]
    assert body["downloads"] == 0
    assert body["owner"] == "alice"
    assert body["preprocessing"]["layout"] == "flat"


def test_it_refuses_bad_preprocessing(alice_client, publish):
    publish("tiny")
    response = alice_client.patch(
        "/api/v1/models/alice/tiny",
        {"preprocessing": {"layout": "sideways"}},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert "preprocessing" in response.json()


def test_another_user_cannot_edit_or_delete_a_public_model(client, publish, bob):
    publish("tiny")
    client.force_login(bob)
    assert (
        client.patch(
            "/api/v1/models/alice/tiny", {"description": "mine"}, content_type="application/json"
        ).status_code
        == 403
    )
    assert client.delete("/api/v1/models/alice/tiny").status_code == 403
    assert Model.objects.filter(name="tiny").exists()


def test_the_owner_deletes_a_model(alice_client, publish):
    publish("tiny")
    assert alice_client.delete("/api/v1/models/alice/tiny").status_code == 204
    assert alice_client.get("/api/v1/models/alice/tiny").status_code == 404


def test_it_downloads_the_file_as_uploaded_and_counts_it(client, publish):
    publish("tiny")
    response = client.get("/api/v1/models/alice/tiny/versions/1/file")
    assert response.status_code == 200
    content = b"".join(response.streaming_content)
    assert content == onnx_model_bytes()
    assert response["X-Content-SHA256"] == hashlib.sha256(content).hexdigest()
    assert "tiny-v1.onnx" in response["Content-Disposition"]
    assert client.get("/api/v1/models/alice/tiny").json()["downloads"] == 1


def test_a_read_key_reads_and_a_predict_only_key_gets_403(client, publish, alice):
    from portal.models import ApiKey

    publish("tiny")
    _k, reader = ApiKey.issue(user=alice, name="r", scopes=["read"])
    _k, predictor = ApiKey.issue(user=alice, name="p", scopes=["predict"])
    assert client.get("/api/v1/models/alice/tiny", HTTP_AUTHORIZATION=f"Bearer {reader}").status_code == 200
    assert (
        client.get("/api/v1/models/alice/tiny", HTTP_AUTHORIZATION=f"Bearer {predictor}").status_code == 403
    )
    assert client.get("/api/v1/models", HTTP_AUTHORIZATION="Bearer mp_bad_key").status_code == 401
