"""The shared cache stores JSON, never a pickle: what the app writes to Redis reads as JSON there, and a
pickle planted under a key the app reads runs no code (it reads as a miss and the entry is rewritten)."""

from __future__ import annotations

import json
import os
import pickle
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone
from django_redis import get_redis_connection

from portal import process_cache
from portal.authentication import key_cache_key

from .conftest import bearer, issue_key

pytestmark = pytest.mark.django_db


class TouchesAFile:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def raw(key: str) -> bytes | None:
    return get_redis_connection("default").get(cache.make_key(key))


def test_a_value_written_through_the_cache_is_json_in_redis():
    cache.set("portal:test-entry", {"plan": "free", "limits": [1, 2.5, None, True]}, 60)
    assert json.loads(raw("portal:test-entry")) == {"plan": "free", "limits": [1, 2.5, None, True]}
    assert cache.get("portal:test-entry") == {"plan": "free", "limits": [1, 2.5, None, True]}


def test_it_refuses_to_write_a_value_that_is_not_json():
    with pytest.raises(TypeError):
        cache.set("portal:test-entry", {1, 2}, 60)
    assert raw("portal:test-entry") is None


def test_a_cached_api_key_is_json_in_redis_and_its_times_come_back_as_times(client, alice):
    key, raw_key = issue_key(alice, expires_at=timezone.now() + timedelta(days=1))
    assert client.get("/api/v1/predictions", **bearer(raw_key)).status_code == 200
    entry = json.loads(raw(key_cache_key(key.prefix)))
    assert key.prefix in entry["key"]
    assert "password" not in json.dumps(entry)

    process_cache.clear_copies()  # the next look-up reads the shared cache's JSON, not this process's copy
    assert client.get("/api/v1/predictions", **bearer(raw_key)).status_code == 200


def test_an_expired_key_read_back_from_the_cache_is_still_refused(client, alice):
    key, raw_key = issue_key(alice, expires_at=timezone.now() - timedelta(minutes=1))
    assert client.get("/api/v1/predictions", **bearer(raw_key)).status_code == 401
    assert raw(key_cache_key(key.prefix)) is not None
    process_cache.clear_copies()
    response = client.get("/api/v1/predictions", **bearer(raw_key))
    assert response.status_code == 401
    assert "expired" in response.json()["detail"].lower()


def test_a_pickle_planted_under_a_key_the_app_reads_runs_no_code(client, alice, tmp_path):
    marker = tmp_path / "pwned"
    key, raw_key = issue_key(alice)
    get_redis_connection("default").set(
        cache.make_key(key_cache_key(key.prefix)), pickle.dumps(TouchesAFile(str(marker)))
    )
    process_cache.clear_copies()

    response = client.get("/api/v1/predictions", **bearer(raw_key))

    assert response.status_code == 200, response.content
    assert not marker.exists()
    # Read as a miss: the key was loaded from the database and its entry rewritten as JSON.
    assert key.prefix in json.loads(raw(key_cache_key(key.prefix)))["key"]
