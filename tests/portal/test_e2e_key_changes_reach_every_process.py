"""Web processes keep keys and limits in memory; a change made anywhere reaches every process at once."""

from __future__ import annotations

import pytest
import requests

from portal.models import ApiKey
from portal.services import key_revoke, quota_set

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def usage(live_web, key: str) -> requests.Response:
    return requests.get(
        f"{live_web.url}/api/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=10
    )


def test_a_revoked_key_is_refused_on_the_very_next_request_by_every_web_process(live_web, alice):
    key, raw = ApiKey.issue(user=alice, name="cached", scopes=["read"])
    # Enough calls that both gunicorn workers hold the key in memory.
    assert all(usage(live_web, raw).status_code == 200 for _ in range(12))
    key_revoke(key=key)
    answers = [usage(live_web, raw).status_code for _ in range(12)]
    assert answers == [401] * 12


def test_a_changed_limit_is_seen_on_the_very_next_request_by_every_web_process(live_web, alice):
    _, raw = ApiKey.issue(user=alice, name="cached", scopes=["read"])
    assert all(usage(live_web, raw).json()["limits"]["requests_per_day"] != 7 for _ in range(12))
    quota_set(user=alice, requests_per_day=7)
    assert [usage(live_web, raw).json()["limits"]["requests_per_day"] for _ in range(12)] == [7] * 12
