"""Gated models: everyone sees the page and card; downloads need the owner's approval, asked for through the
API (access requests) or the model page; the requester sees the outcome on their own page."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from portal.models import ApiKey
from tests.conftest import PASSWORD

from .conftest import onnx_model_bytes

pytestmark = pytest.mark.django_db

MODEL = "/api/v1/models/alice/weights"
FILE = f"{MODEL}/versions/1/file"
REQUESTS = f"{MODEL}/access-requests"


@pytest.fixture
def gated(publish):
    return publish("weights", gated=True, description="# Weights\n\nA **gated** card.")


def key_client(user, scopes=("read", "predict")) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {ApiKey.issue(user=user, name='k', scopes=list(scopes))[1]}"
    )
    return client


@pytest.fixture
def bob_api(bob) -> APIClient:
    return key_client(bob)


@pytest.fixture
def alice_api(alice) -> APIClient:
    return key_client(alice, scopes=("read", "upload"))


def test_anonymous_visitors_see_the_page_and_card_but_not_the_file(client, gated):
    page = client.get("/models/alice/weights/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "A <strong>gated</strong> card." in html
    assert "gated" in html and "Log in</a> to request access" in html
    assert ">gated</span>" in client.get("/models/").content.decode()  # the browse tile says so
    detail = client.get(MODEL).json()
    assert detail["gated"] is True and detail["visibility"] == "public"
    response = client.get(FILE)
    assert response.status_code in (401, 403)


def test_bob_gets_403_saying_how_to_ask_then_the_file_once_approved_and_403_after_revocation(
    gated, bob_api, alice_api
):
    refused = bob_api.get(FILE)
    assert refused.status_code == 403
    assert "gated" in refused.json()["detail"] and REQUESTS in refused.json()["detail"]

    asked = bob_api.post(REQUESTS, {"reason": "research"}, format="json")
    assert asked.status_code == 201, asked.content
    assert asked.json()["status"] == "pending" and asked.json()["user"] == "bob"
    assert bob_api.get(FILE).status_code == 403  # asking is not being granted

    approved = alice_api.post(f"{REQUESTS}/{asked.json()['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    download = bob_api.get(FILE)
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == onnx_model_bytes()

    revoked = alice_api.post(f"{REQUESTS}/{asked.json()['id']}/deny")
    assert revoked.status_code == 200 and revoked.json()["status"] == "denied"
    assert bob_api.get(FILE).status_code == 403


def test_the_owner_lists_every_request_and_others_only_their_own(
    gated, bob, alice_api, bob_api, django_user_model
):
    carol = django_user_model.objects.create_user("carol", "carol@example.com", PASSWORD)
    carol_api = key_client(carol)
    bob_api.post(REQUESTS, {}, format="json")
    carol_api.post(REQUESTS, {"reason": "teaching"}, format="json")
    assert sorted(r["user"] for r in alice_api.get(REQUESTS).json()) == ["bob", "carol"]
    assert [r["user"] for r in bob_api.get(REQUESTS).json()] == ["bob"]
    assert [r["reason"] for r in carol_api.get(REQUESTS).json()] == ["teaching"]


def test_only_the_owner_answers_requests(gated, bob_api):
    asked = bob_api.post(REQUESTS, {}, format="json").json()
    refused = bob_api.post(f"{REQUESTS}/{asked['id']}/approve")
    assert refused.status_code == 403
    assert bob_api.get(FILE).status_code == 403


def test_asking_again_is_idempotent_and_reopens_a_denied_request(gated, bob_api, alice_api):
    first = bob_api.post(REQUESTS, {}, format="json")
    again = bob_api.post(REQUESTS, {}, format="json")
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    alice_api.post(f"{REQUESTS}/{first.json()['id']}/deny")
    reopened = bob_api.post(REQUESTS, {"reason": "please"}, format="json")
    assert reopened.status_code == 201 and reopened.json()["status"] == "pending"


def test_it_rejects_a_request_for_a_model_that_is_not_gated(publish, bob_api):
    publish("open")
    response = bob_api.post("/api/v1/models/alice/open/access-requests", {}, format="json")
    assert response.status_code == 400 and "not gated" in response.json()["detail"]


def test_an_unknown_request_id_is_404(gated, alice_api):
    assert alice_api.post(f"{REQUESTS}/999999/approve").status_code == 404


def test_the_owner_gates_a_model_with_patch_and_the_gate_holds_at_once(publish, bob_api, alice_api):
    publish("later")
    assert bob_api.get("/api/v1/models/alice/later/versions/1/file").status_code == 200
    changed = alice_api.patch("/api/v1/models/alice/later", {"gated": True}, format="json")
    assert changed.status_code == 200 and changed.json()["gated"] is True
    assert bob_api.get("/api/v1/models/alice/later/versions/1/file").status_code == 403


def test_the_owner_and_staff_download_without_asking(gated, alice_api, django_user_model):
    assert alice_api.get(FILE).status_code == 200
    staff = django_user_model.objects.create_user("root", "root@example.com", PASSWORD, is_staff=True)
    assert key_client(staff).get(FILE).status_code == 200


def test_upload_takes_gated(api, alice):
    from .conftest import upload_file

    response = api.post(
        "/api/v1/models", {"name": "fresh", "file": upload_file(onnx_model_bytes()), "gated": "true"}
    )
    assert response.status_code in (201, 202), response.content
    from marketplace.models import Model

    assert Model.objects.get(owner=alice, name="fresh").gated is True


# --- the pages ----------------------------------------------------------------------------------------------


def test_the_pages_carry_a_request_from_bob_to_alices_answer_and_back(client, gated, alice, bob):
    client.force_login(bob)
    page = client.get("/models/alice/weights/").content.decode()
    assert "Request access" in page
    response = client.post("/models/alice/weights/access/", {"reason": "for a thesis"})
    assert response.status_code == 302
    assert "the owner has not answered yet" in client.get("/models/alice/weights/").content.decode()
    assert "pending" in client.get("/settings/access/").content.decode()

    client.force_login(alice)
    owner_page = client.get("/models/alice/weights/").content.decode()
    assert "for a thesis" in owner_page and "Approve" in owner_page and "Deny" in owner_page
    assert "alice/weights" in client.get("/settings/access/").content.decode()  # waiting for an answer
    access_id = gated.access_requests.get().id
    assert client.post(f"/models/alice/weights/access/{access_id}/approve/").status_code == 302
    assert "Revoke" in client.get("/models/alice/weights/").content.decode()

    client.force_login(bob)
    mine = client.get("/settings/access/").content.decode()
    assert "approved" in mine and "alice/weights" in mine
    assert "you may run and download this model" in client.get("/models/alice/weights/").content.decode()
    assert client.get(FILE).status_code == 200

    client.force_login(alice)
    client.post(f"/models/alice/weights/access/{access_id}/deny/")
    client.force_login(bob)
    assert "denied" in client.get("/settings/access/").content.decode()
    assert client.get(FILE).status_code == 403


def test_bob_cannot_answer_requests_from_the_page(client, gated, bob):
    client.force_login(bob)
    client.post("/models/alice/weights/access/", {})
    access_id = gated.access_requests.get().id
    assert client.post(f"/models/alice/weights/access/{access_id}/approve/").status_code == 404
    assert gated.access_requests.get().status == "pending"


# --- the admin ----------------------------------------------------------------------------------------------


def test_staff_answer_requests_in_the_admin_through_the_same_service(admin_client, gated, bob, bob_api):
    bob_api.post(REQUESTS, {}, format="json")
    access = gated.access_requests.get()
    changelist = admin_client.get("/admin/marketplace/accessrequest/")
    assert changelist.status_code == 200 and "bob" in changelist.content.decode()
    assert bob_api.get(FILE).status_code == 403  # the refusal is cached now
    admin_client.post(
        "/admin/marketplace/accessrequest/",
        {"action": "approve_access", "_selected_action": [access.pk]},
    )
    assert bob_api.get(FILE).status_code == 200
    admin_client.post(
        "/admin/marketplace/accessrequest/",
        {"action": "deny_access", "_selected_action": [access.pk]},
    )
    assert bob_api.get(FILE).status_code == 403
