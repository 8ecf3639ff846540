"""admit_prediction: every window counts, all-or-nothing, on Redis and on the SQL fallback."""

from __future__ import annotations

import pytest

from portal.models import UsageCounter
from portal.quotas import QuotaExceeded, admission_refund, admit_prediction, current_windows

from .conftest import issue_key, limit

pytestmark = pytest.mark.django_db


def admitted_count(user, api_key, attempts: int) -> int:
    admitted = 0
    for _ in range(attempts):
        try:
            admit_prediction(user=user, api_key=api_key)
            admitted += 1
        except QuotaExceeded:
            pass
    return admitted


def test_it_admits_up_to_the_daily_limit_then_names_it(quota_backend, alice):
    limit(alice, requests_per_day=3)
    assert admitted_count(alice, None, 3) == 3
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=None)
    assert rejected.value.status_code == 429
    assert rejected.value.limit_name == "requests_per_day"
    assert 0 < rejected.value.retry_after <= 86400
    assert rejected.value.detail["limit"] == "requests_per_day"
    headers = rejected.value.headers
    assert headers["Retry-After"] == str(rejected.value.retry_after)
    assert headers["RateLimit-Limit"] == "3" and headers["RateLimit-Remaining"] == "0"


def test_it_admits_up_to_the_minute_limit(quota_backend, alice):
    limit(alice, requests_per_minute=4)
    assert admitted_count(alice, None, 10) == 4
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=None)
    assert rejected.value.limit_name == "requests_per_minute"
    assert 0 < rejected.value.retry_after <= 60


def test_the_admission_reports_what_remains(quota_backend, alice):
    limit(alice, requests_per_minute=10, requests_per_day=100)
    admit_prediction(user=alice, api_key=None)
    admission = admit_prediction(user=alice, api_key=None)
    assert admission.headers["RateLimit-Limit"] == "10"
    assert admission.headers["RateLimit-Remaining"] == "8"
    assert 0 < int(admission.headers["RateLimit-Reset"]) <= 60


def test_a_key_cap_holds_below_the_users_limit(quota_backend, alice):
    limit(alice, requests_per_day=100)
    capped, _ = issue_key(alice, requests_per_day=2)
    other, _ = issue_key(alice, name="other")
    assert admitted_count(alice, capped, 5) == 2
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=capped)
    assert rejected.value.limit_name == "key_requests_per_day"
    # The user still has room through another key or the session.
    assert admitted_count(alice, other, 3) == 3


def test_a_rejected_request_counts_nowhere(quota_backend, alice):
    limit(alice, requests_per_day=100)
    capped, _ = issue_key(alice, requests_per_minute=1)
    admit_prediction(user=alice, api_key=capped)
    for _ in range(5):
        with pytest.raises(QuotaExceeded):
            admit_prediction(user=alice, api_key=capped)
    minute, day, key_minute = current_windows(alice, capped)
    assert (minute.used, day.used, key_minute.used) == (1, 1, 1)


def test_a_user_over_the_months_compute_is_refused(quota_backend, alice):
    limit(alice, compute_seconds_per_month=2)
    UsageCounter.objects.create(key=f"u:{alice.pk}:compute", window=_this_month(), used=2000)
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=None)
    assert rejected.value.limit_name == "compute_seconds_per_month"
    assert rejected.value.headers["RateLimit-Remaining"] == "0"
    assert current_windows(alice)[1].used == 0


def test_last_months_compute_does_not_count(quota_backend, alice):
    limit(alice, compute_seconds_per_month=2)
    UsageCounter.objects.create(key=f"u:{alice.pk}:compute", window=_this_month() - 1, used=999_000)
    admit_prediction(user=alice, api_key=None)


def test_a_zero_limit_admits_nothing(quota_backend, alice):
    limit(alice, requests_per_minute=0)
    assert admitted_count(alice, None, 3) == 0


def test_a_changed_quota_applies_to_the_next_request(quota_backend, alice):
    limit(alice, requests_per_day=1)
    admit_prediction(user=alice, api_key=None)
    with pytest.raises(QuotaExceeded):
        admit_prediction(user=alice, api_key=None)
    limit(alice, requests_per_day=2)
    admit_prediction(user=alice, api_key=None)


def test_a_changed_plan_applies_to_the_next_request(quota_backend, alice):
    from portal.models import Plan

    plan = alice.quota.plan
    plan.requests_per_day = 1
    plan.save()
    admit_prediction(user=alice, api_key=None)
    with pytest.raises(QuotaExceeded):
        admit_prediction(user=alice, api_key=None)
    plan.requests_per_day = 5
    plan.save()
    admit_prediction(user=alice, api_key=None)
    assert Plan.objects.get(pk=plan.pk).requests_per_day == 5


def test_users_do_not_share_counters(quota_backend, alice, bob):
    limit(alice, requests_per_day=1)
    limit(bob, requests_per_day=1)
    admit_prediction(user=alice, api_key=None)
    admit_prediction(user=bob, api_key=None)


def _this_month() -> int:
    import time

    from portal.quotas import month_number

    return month_number(time.time())


def test_it_answers_503_when_redis_is_down(settings, alice, monkeypatch, fresh_redis_scripts):
    import redis

    from portal import quotas
    from tests.conftest import free_port

    settings.QUOTA_BACKEND = "redis"
    nobody_listens = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    monkeypatch.setattr(quotas, "redis_client", lambda: nobody_listens)
    with pytest.raises(quotas.QuotaUnavailable) as unavailable:
        admit_prediction(user=alice, api_key=None)
    assert unavailable.value.status_code == 503
    assert "retry" in str(unavailable.value.detail)


def test_a_refund_gives_back_one_request_in_every_window_it_counted_in(quota_backend, alice):
    limit(alice, requests_per_minute=2, requests_per_day=100)
    key, _ = issue_key(alice)
    admit_prediction(user=alice, api_key=key)
    refused_later = admit_prediction(user=alice, api_key=key)
    admission_refund(refused_later)
    assert [w.used for w in current_windows(alice, key)] == [1] * len(refused_later.windows)
    # The minute's second request is available again, and a refund never goes below zero.
    admit_prediction(user=alice, api_key=key)
    with pytest.raises(QuotaExceeded):
        admit_prediction(user=alice, api_key=key)
    for _ in range(3):
        admission_refund(refused_later)
    assert [w.used for w in current_windows(alice, key)] == [0] * len(refused_later.windows)
