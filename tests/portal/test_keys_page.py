"""/settings/keys/: create through the real form (shown once, with a copy button), list, revoke with CSRF."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from portal.models import ApiKey

from .conftest import bearer, issue_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def csrf_client(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def csrf_token(page) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)


def test_it_requires_login(client):
    response = client.get("/settings/keys/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_it_creates_a_key_through_the_form_and_shows_it_once(csrf_client, client):
    page = csrf_client.get("/settings/keys/")
    assert b"No keys yet." in page.content
    response = csrf_client.post(
        "/settings/keys/",
        {
            "csrfmiddlewaretoken": csrf_token(page),
            "name": "laptop",
            "scopes": ["read", "predict"],
            "requests_per_minute": "5",
        },
    )
    assert response.status_code == 200
    html = response.content.decode()
    raw_key = re.search(r'id="new-key" class="key-value" value="(mp_[^"]+)"', html).group(1)
    assert 'data-copy-target="new-key"' in html and "/static/js/keys.js" in html
    assert response["Cache-Control"] == "no-store"
    key = ApiKey.objects.get(name="laptop")
    assert key.scopes == ["predict", "read"] and key.requests_per_minute == 5
    assert client.get("/api/v1/usage", **bearer(raw_key)).status_code == 200

    listing = csrf_client.get("/settings/keys/").content.decode()
    assert raw_key not in listing
    assert key.display in listing and "laptop" in listing and "never" in listing and "cap: 5/min" in listing


def test_it_shows_form_errors(csrf_client):
    page = csrf_client.get("/settings/keys/")
    response = csrf_client.post("/settings/keys/", {"csrfmiddlewaretoken": csrf_token(page), "name": ""})
    assert response.status_code == 200
    assert b"This field is required." in response.content
    assert not ApiKey.objects.exists()


def test_it_revokes_through_the_form(csrf_client, alice, client):
    key, raw_key = issue_key(alice, name="old laptop")
    page = csrf_client.get("/settings/keys/")
    assert f'action="/settings/keys/{key.pk}/revoke/"'.encode() in page.content
    response = csrf_client.post(
        f"/settings/keys/{key.pk}/revoke/", {"csrfmiddlewaretoken": csrf_token(page)}, follow=True
    )
    assert response.status_code == 200
    assert b"Revoked old laptop" in response.content
    assert b"revoked" in response.content
    assert client.get("/api/v1/usage", **bearer(raw_key)).status_code == 401


def test_revoking_needs_the_csrf_token(csrf_client, alice):
    key, _ = issue_key(alice)
    assert csrf_client.post(f"/settings/keys/{key.pk}/revoke/").status_code == 403
    key.refresh_from_db()
    assert key.revoked_at is None


def test_it_cannot_revoke_someone_elses_key(alice_client, bob):
    key, _ = issue_key(bob)
    assert alice_client.post(f"/settings/keys/{key.pk}/revoke/").status_code == 404
    key.refresh_from_db()
    assert key.revoked_at is None


def test_the_copy_script_is_served_locally(client):
    from django.contrib.staticfiles import finders

    script = open(finders.find("js/keys.js")).read()
    assert "clipboard" in script and "http" not in script.replace("Plain-HTTP", "")
