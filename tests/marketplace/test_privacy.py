"""A private model is invisible to everyone but its owner and staff: 404 on every path, absent from lists."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db

PATHS = [
    "/api/v1/models/alice/secret",
    "/api/v1/models/alice/secret/versions",
    "/api/v1/models/alice/secret/versions/1",
    "/api/v1/models/alice/secret/versions/1/file",
    "/models/alice/secret/",
]


@pytest.fixture
def secret(publish):
    return publish("secret", visibility="private", description="classified")


@pytest.mark.parametrize("path", PATHS)
def test_anonymous_visitors_get_404(client, secret, path):
    assert client.get(path).status_code == 404


@pytest.mark.parametrize("path", PATHS)
def test_another_user_gets_404(client, secret, bob, path):
    client.force_login(bob)
    assert client.get(path).status_code == 404


def test_another_users_key_gets_404_on_writes_too(client, secret, bob):
    from portal.models import ApiKey

    _k, key = ApiKey.issue(user=bob, name="k", scopes=["read", "upload"])
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert client.get("/api/v1/models/alice/secret", **auth).status_code == 404
    assert (
        client.patch(
            "/api/v1/models/alice/secret", {"visibility": "public"}, content_type="application/json", **auth
        ).status_code
        == 404
    )
    assert client.delete("/api/v1/models/alice/secret", **auth).status_code == 404
    assert client.post("/api/v1/models/alice/secret/versions", {}, **auth).status_code == 404


def test_it_is_absent_from_lists_and_search_for_others(client, secret, bob, publish):
    publish("open")
    assert [m["name"] for m in client.get("/api/v1/models").json()["results"]] == ["open"]
    assert client.get("/api/v1/models?q=classified").json()["count"] == 0
    client.force_login(bob)
    assert [m["name"] for m in client.get("/api/v1/models").json()["results"]] == ["open"]
    page = client.get("/models/").content.decode()
    assert "secret" not in page
    assert "secret" not in client.get("/").content.decode()


@pytest.mark.parametrize("path", PATHS)
def test_the_owner_sees_it_everywhere(alice_client, secret, path):
    assert alice_client.get(path).status_code == 200


def test_the_owner_lists_it(alice_client, secret):
    assert [m["name"] for m in alice_client.get("/api/v1/models").json()["results"]] == ["secret"]


def test_staff_see_it(admin_client, secret):
    assert admin_client.get("/api/v1/models/alice/secret").status_code == 200
