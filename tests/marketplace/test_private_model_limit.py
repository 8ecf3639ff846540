"""The plan's private-model allowance holds on upload, on edit and on the visibility toggle."""

import pytest

from marketplace.models import Model
from portal.models import Plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def tight_plan(alice):
    from portal.quotas import quota_for

    quota = quota_for(alice)
    quota.max_private_models = 1
    quota.save()
    return quota


def make_model(owner, name, visibility):
    return Model.objects.create(owner=owner, name=name, visibility=visibility)


def test_it_refuses_a_second_private_model_over_the_api(alice, tight_plan):
    from rest_framework.test import APIClient

    make_model(alice, "first", "private")
    second = make_model(alice, "second", "public")
    client = APIClient()
    client.force_authenticate(alice)
    response = client.patch(f"/api/v1/models/alice/{second.name}", {"visibility": "private"}, format="json")
    assert response.status_code == 400
    assert "allows 1 private model" in response.json()["visibility"][0]
    second.refresh_from_db()
    assert second.visibility == "public"


def test_it_refuses_the_toggle_on_the_model_page(alice_client, alice, tight_plan):
    make_model(alice, "first", "private")
    second = make_model(alice, "second", "public")
    response = alice_client.post(f"/models/alice/{second.name}/visibility/", follow=True)
    assert b"allows 1 private model" in response.content
    second.refresh_from_db()
    assert second.visibility == "public"


def test_making_the_same_private_model_private_again_is_fine(alice, tight_plan):
    from marketplace.services import model_update

    first = make_model(alice, "first", "private")
    model_update(model=first, visibility="private", description="still mine")
    first.refresh_from_db()
    assert first.description == "still mine"


def test_plans_carry_the_allowance():
    assert Plan.objects.get(is_default=True).max_private_models >= 1
