"""The catalog admin goes through the same services as the pages and the API."""

from __future__ import annotations

import pytest
from django.core.files.storage import default_storage

from marketplace.models import Model, ModelVersion

from .conftest import onnx_model_bytes

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_private_model_allowed(alice):
    from portal.quotas import quota_for

    quota = quota_for(alice)
    quota.max_private_models = 1
    quota.save()


def stored_files(model: Model) -> list[str]:
    names = list(ModelVersion.objects.filter(model=model).values_list("file", flat=True))
    assert names and all(default_storage.exists(name) for name in names)
    return names


def test_deleting_a_model_on_its_admin_page_removes_its_files(admin_client, publish):
    model = publish("doomed", content=onnx_model_bytes(bias=0.25))
    names = stored_files(model)
    response = admin_client.post(f"/admin/marketplace/model/{model.pk}/delete/", {"post": "yes"}, follow=True)
    assert response.status_code == 200
    assert not Model.objects.filter(pk=model.pk).exists()
    assert not any(default_storage.exists(name) for name in names)


def test_the_delete_selected_action_removes_the_files(admin_client, publish):
    first = publish("first", content=onnx_model_bytes(bias=0.5))
    second = publish("second", content=onnx_model_bytes(bias=0.75))
    names = stored_files(first) + stored_files(second)
    response = admin_client.post(
        "/admin/marketplace/model/",
        {"action": "delete_selected", "_selected_action": [first.pk, second.pk], "post": "yes"},
        follow=True,
    )
    assert response.status_code == 200
    assert not Model.objects.filter(pk__in=[first.pk, second.pk]).exists()
    assert not any(default_storage.exists(name) for name in names)


def test_it_keeps_a_file_another_model_still_uses(admin_client, publish, bob):
    doomed = publish("doomed", content=onnx_model_bytes(bias=1.5))
    kept = publish("kept", owner=bob, content=onnx_model_bytes(bias=1.5))
    [name] = stored_files(doomed)
    admin_client.post(f"/admin/marketplace/model/{doomed.pk}/delete/", {"post": "yes"})
    assert default_storage.exists(name)
    assert stored_files(kept) == [name]


def test_unlist_respects_the_private_model_allowance(admin_client, alice, publish, one_private_model_allowed):
    publish("first", visibility="private")
    second = publish("second")
    response = admin_client.post(
        "/admin/marketplace/model/", {"action": "unlist_models", "_selected_action": [second.pk]}, follow=True
    )
    assert response.status_code == 200
    page = response.content.decode()
    assert "Not changed, alice/second" in page
    assert "allows 1 private model" in page
    assert Model.objects.get(pk=second.pk).visibility == "public"


def test_unlist_makes_private_within_the_allowance(admin_client, alice, publish, one_private_model_allowed):
    model = publish("only")
    response = admin_client.post(
        "/admin/marketplace/model/", {"action": "unlist_models", "_selected_action": [model.pk]}, follow=True
    )
    assert "Unlisted 1 model(s): alice/only." in response.content.decode()
    assert Model.objects.get(pk=model.pk).visibility == "private"
    admin_client.logout()
    # The catalog sees the change: the model left the public list.
    assert "only" not in [m["name"] for m in admin_client.get("/api/v1/models").json()["results"]]


def test_the_change_form_respects_the_allowance(admin_client, alice, publish, one_private_model_allowed):
    publish("first", visibility="private")
    second = publish("second", description="kept")
    form = {
        "owner": str(alice.pk),
        "name": "second",
        "task": second.task,
        "description": "edited",
        "tags": "[]",
        "license": "",
        "labels": "[]",
        "preprocessing": "{}",
        "visibility": "private",
        "versions-TOTAL_FORMS": "1",
        "versions-INITIAL_FORMS": "1",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
        "versions-0-id": str(second.versions.get().pk),
        "versions-0-model": str(second.pk),
    }
    response = admin_client.post(f"/admin/marketplace/model/{second.pk}/change/", form)
    assert response.status_code == 200
    assert "allows 1 private model" in response.content.decode()
    second.refresh_from_db()
    assert (second.visibility, second.description) == ("public", "kept")
    form["visibility"] = "public"
    assert admin_client.post(f"/admin/marketplace/model/{second.pk}/change/", form).status_code == 302
    second.refresh_from_db()
    assert second.description == "edited"
