"""RateLimit-* headers on every API response of a known caller; the 429 body and headers of a spent quota."""

from __future__ import annotations

import pytest
from rest_framework.views import exception_handler

from portal.quotas import QuotaExceeded, admit_prediction

from .conftest import bearer, issue_key, limit

pytestmark = pytest.mark.django_db


def test_api_responses_carry_the_callers_minute_window(client, alice):
    limit(alice, requests_per_minute=30)
    _, raw_key = issue_key(alice)
    admit_prediction(user=alice, api_key=None)
    response = client.get("/api/v1/usage", **bearer(raw_key))
    assert response["RateLimit-Limit"] == "30"
    assert response["RateLimit-Remaining"] == "29"
    assert 0 < int(response["RateLimit-Reset"]) <= 60


def test_session_callers_get_them_too(alice_client):
    response = alice_client.get("/api/v1/keys")
    assert response["RateLimit-Limit"] == "60" and response["RateLimit-Remaining"] == "60"


def test_v2_responses_carry_them_for_a_known_caller(client, alice):
    client.force_login(alice)
    assert client.get("/v2/health/live")["RateLimit-Limit"] == "60"


def test_pages_and_anonymous_calls_carry_none(alice_client):
    from django.test import Client

    assert "RateLimit-Limit" not in Client().get("/v2/health/live")
    assert "RateLimit-Limit" not in alice_client.get("/settings/keys/")


def test_a_spent_quota_answers_429_with_retry_after_and_the_limit_name(quota_backend, alice):
    limit(alice, requests_per_day=1)
    admit_prediction(user=alice, api_key=None)
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=None)
    response = exception_handler(rejected.value, {})
    assert response.status_code == 429
    assert response.data["limit"] == "requests_per_day"
    assert "requests per day" in response.data["detail"]
    assert int(response["Retry-After"]) == rejected.value.retry_after > 0
