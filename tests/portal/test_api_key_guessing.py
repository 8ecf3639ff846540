"""Guessing keys is not free: past a limit of invalid keys a client gets 429 with Retry-After, on /api/v1 and
/v2 alike, while a valid key, even from that very address, keeps working."""

from __future__ import annotations

import secrets

import pytest
from django.core.cache import cache
from django.test import Client

from portal.models import KEY_PREFIX_LENGTH, ApiKey

from .conftest import bearer, issue_key

pytestmark = pytest.mark.django_db

USAGE = "/api/v1/usage"
LIMIT = 5
WINDOW = 300


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.API_KEY_FAILURE_LIMIT = LIMIT
    settings.API_KEY_FAILURE_WINDOW = WINDOW


def guessed_key() -> str:
    """A well-formed key that does not exist: a random prefix and secret, shaped like a real one."""
    raw_key = f"mp_{secrets.token_hex(KEY_PREFIX_LENGTH // 2)}_{secrets.token_urlsafe(32)}"
    assert ApiKey.prefix_of(raw_key) is not None
    return raw_key


def throttle_keys() -> list[str]:
    return list(cache.keys("portal:throttle:*"))


def test_it_answers_429_with_retry_after_past_the_limit(client, alice):
    answers = [client.get(USAGE, **bearer(guessed_key())) for _ in range(LIMIT + 3)]
    assert [a.status_code for a in answers] == [401] * LIMIT + [429] * 3
    refused = answers[-1]
    assert 1 <= int(refused["Retry-After"]) <= WINDOW
    body = refused.json()
    assert "Too many invalid API keys" in body["detail"]
    assert body["limit"] == "invalid_api_keys"
    assert body["retry_after"] == int(refused["Retry-After"])


def test_a_valid_key_from_the_same_address_keeps_working(client, alice):
    _, raw_key = issue_key(alice)
    for _ in range(LIMIT + 3):
        client.get(USAGE, **bearer(guessed_key()))
    assert client.get(USAGE, **bearer(guessed_key())).status_code == 429
    for _ in range(3):
        response = client.get(USAGE, **bearer(raw_key))
        assert response.status_code == 200
        assert response.json()["plan"] == "Free"


def test_other_addresses_are_not_held_back(client, alice):
    for _ in range(LIMIT + 1):
        client.get(USAGE, **bearer(guessed_key()))
    elsewhere = Client(REMOTE_ADDR="198.51.100.20")
    assert elsewhere.get(USAGE, **bearer(guessed_key())).status_code == 401


def test_v2_answers_429_in_its_own_error_shape(client, alice, version):
    _, raw_key = issue_key(alice)
    path = "/v2/models/alice/digits"
    answers = [client.get(path, **bearer(guessed_key())) for _ in range(LIMIT + 1)]
    assert [a.status_code for a in answers] == [401] * LIMIT + [429]
    assert "Too many invalid API keys" in answers[-1].json()["error"]
    assert int(answers[-1]["Retry-After"]) >= 1
    assert client.get(path, **bearer(raw_key)).status_code == 200


def test_a_wrong_secret_for_a_real_prefix_counts_as_a_guess(client, alice):
    _, raw_key = issue_key(alice)
    forged = raw_key[:-6] + secrets.token_urlsafe(4)[:6]
    answers = [client.get(USAGE, **bearer(forged)) for _ in range(LIMIT + 1)]
    assert [a.status_code for a in answers] == [401] * LIMIT + [429]
    assert client.get(USAGE, **bearer(raw_key)).status_code == 200


def test_valid_keys_never_touch_the_failure_counter(client, alice):
    _, raw_key = issue_key(alice)
    for _ in range(10):
        assert client.get(USAGE, **bearer(raw_key)).status_code == 200
    assert throttle_keys() == []
    client.get(USAGE, **bearer(guessed_key()))
    assert throttle_keys() != []


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(alice, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    proxy = Client(REMOTE_ADDR="10.0.0.2")
    for _ in range(LIMIT + 1):
        last = proxy.get(USAGE, HTTP_X_FORWARDED_FOR="192.0.2.1", **bearer(guessed_key()))
    assert last.status_code == 429
    # Another client behind the same proxy is someone else; a forged left-most entry changes nothing.
    other = proxy.get(USAGE, HTTP_X_FORWARDED_FOR="192.0.2.99, 192.0.2.2", **bearer(guessed_key()))
    assert other.status_code == 401
