"""`/api/v1/keys`: create (the key shown once), list, revoke; managed from a session only."""

from __future__ import annotations

import pytest

from portal.models import ApiKey

from .conftest import bearer, issue_key

pytestmark = pytest.mark.django_db


def test_it_creates_a_key_and_shows_it_once(alice_client):
    response = alice_client.post(
        "/api/v1/keys", {"name": "laptop", "scopes": ["read", "predict"]}, content_type="application/json"
    )
    assert response.status_code == 201
    body = response.json()
    assert body["key"].startswith("mp_") and body["name"] == "laptop"
    assert body["scopes"] == ["predict", "read"]
    assert body["prefix"] == body["key"][: len("mp_") + 8] + "_…"
    listed = alice_client.get("/api/v1/keys").json()
    assert [k["name"] for k in listed] == ["laptop"]
    assert "key" not in listed[0]
    assert alice_client.get("/api/v1/usage", **bearer(body["key"])).status_code == 200


def test_it_accepts_scopes_as_a_comma_separated_string_and_an_expiry(alice_client):
    response = alice_client.post(
        "/api/v1/keys",
        {"name": "ci", "scopes": "read,upload", "expires_at": "2099-01-01T00:00:00Z", "requests_per_day": 50},
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.json()["expires_at"].startswith("2099-01-01")
    assert response.json()["requests_per_day"] == 50


@pytest.mark.parametrize(
    "payload, field",
    [
        ({"name": "x", "scopes": ["admin"]}, "scopes"),
        ({"name": "x", "scopes": []}, "scopes"),
        ({"scopes": ["read"]}, "name"),
        ({"name": "x", "scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"}, "detail"),
        ({"name": "x", "scopes": ["read"], "expires_at": "soon"}, "expires_at"),
    ],
)
def test_it_rejects_bad_input_with_a_named_field(alice_client, payload, field):
    response = alice_client.post("/api/v1/keys", payload, content_type="application/json")
    assert response.status_code == 400
    assert field in response.json()


def test_it_revokes_a_key(alice_client, alice):
    key, _ = issue_key(alice)
    assert alice_client.delete(f"/api/v1/keys/{key.pk}").status_code == 204
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_it_hides_other_users_keys(alice_client, bob):
    key, _ = issue_key(bob)
    assert alice_client.delete(f"/api/v1/keys/{key.pk}").status_code == 404
    assert alice_client.get("/api/v1/keys").json() == []
    key.refresh_from_db()
    assert key.revoked_at is None


def test_a_key_cannot_manage_keys(client, alice):
    key, raw_key = issue_key(alice)
    listing = client.get("/api/v1/keys", **bearer(raw_key))
    assert listing.status_code == 403
    assert "session" in listing.json()["detail"]
    created = client.post(
        "/api/v1/keys", {"name": "x", "scopes": ["read"]}, content_type="application/json", **bearer(raw_key)
    )
    assert created.status_code == 403
    assert client.delete(f"/api/v1/keys/{key.pk}", **bearer(raw_key)).status_code == 403
    assert ApiKey.objects.filter(user=alice).count() == 1


def test_anonymous_callers_get_401(client):
    assert client.get("/api/v1/keys").status_code == 401
