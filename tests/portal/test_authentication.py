"""Bearer keys: 401 for anything but a live key, 403 without the scope, cached look-ups that still obey
revocation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from portal.authentication import forget_recent_uses
from portal.models import ApiKey

from .conftest import bearer, issue_key

pytestmark = pytest.mark.django_db

USAGE = "/api/v1/usage"


def test_a_live_key_works(client, alice):
    _, raw_key = issue_key(alice)
    response = client.get(USAGE, **bearer(raw_key))
    assert response.status_code == 200
    assert response.json()["plan"] == "Free"


def test_it_rejects_a_revoked_key(client, alice):
    key, raw_key = issue_key(alice)
    key.revoke()
    response = client.get(USAGE, **bearer(raw_key))
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_it_rejects_an_expired_key(client, alice):
    _, raw_key = issue_key(alice, expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get(USAGE, **bearer(raw_key))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_it_rejects_a_wrong_secret(client, alice):
    _, raw_key = issue_key(alice)
    forged = raw_key[:-4] + ("AAAA" if not raw_key.endswith("AAAA") else "BBBB")
    response = client.get(USAGE, **bearer(forged))
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid API key."


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer not-a-key", "Token mp_abcdefgh_x", "Bearer mp_short_x y"]
)
def test_it_rejects_a_malformed_header(client, alice, header):
    response = client.get(USAGE, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert "Malformed" in response.json()["detail"]


def test_it_rejects_a_disabled_account(client, alice):
    _, raw_key = issue_key(alice)
    assert client.get(USAGE, **bearer(raw_key)).status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get(USAGE, **bearer(raw_key)).status_code == 401


def test_a_key_without_the_scope_gets_403(client, alice):
    _, raw_key = issue_key(alice, scopes=["predict"])
    response = client.get(USAGE, **bearer(raw_key))
    assert response.status_code == 403
    assert "'read' scope" in response.json()["detail"]


def test_revocation_applies_to_the_very_next_request(client, alice):
    key, raw_key = issue_key(alice)
    assert client.get(USAGE, **bearer(raw_key)).status_code == 200  # now cached
    client.force_login(alice)
    assert client.delete(f"/api/v1/keys/{key.pk}").status_code == 204
    client.logout()
    assert client.get(USAGE, **bearer(raw_key)).status_code == 401


def test_a_cached_key_costs_no_key_query(client, alice):
    _, raw_key = issue_key(alice)
    client.get(USAGE, **bearer(raw_key))
    with CaptureQueriesContext(connection) as queries:
        assert client.get(USAGE, **bearer(raw_key)).status_code == 200
    assert not [q for q in queries.captured_queries if "portal_apikey" in q["sql"]]
    assert not [q for q in queries.captured_queries if "auth_user" in q["sql"]]


def test_last_use_is_written_at_most_once_a_minute(client, alice):
    key, raw_key = issue_key(alice)
    client.get(USAGE, **bearer(raw_key))
    first_use = ApiKey.objects.get(pk=key.pk).last_used_at
    assert first_use is not None
    with CaptureQueriesContext(connection) as queries:
        for _ in range(3):
            client.get(USAGE, **bearer(raw_key))
    assert not [q for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert ApiKey.objects.get(pk=key.pk).last_used_at == first_use

    # A minute later (the flag expired, the row is old) the next use is written again.
    ApiKey.objects.filter(pk=key.pk).update(last_used_at=first_use - timedelta(minutes=2))
    cache.delete(f"portal:key-used:{key.pk}")
    forget_recent_uses()
    client.get(USAGE, **bearer(raw_key))
    assert ApiKey.objects.get(pk=key.pk).last_used_at > first_use - timedelta(minutes=2)


def test_last_use_write_is_one_conditional_update(client, alice):
    key, raw_key = issue_key(alice)
    with CaptureQueriesContext(connection) as queries:
        client.get(USAGE, **bearer(raw_key))
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 1
    assert '"last_used_at"' in updates[0] and "WHERE" in updates[0]
