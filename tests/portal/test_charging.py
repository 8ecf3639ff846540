"""usage_record: the daily ledger and the month's compute, from plain values; only successes cost compute.

Exactly-once per prediction is the caller's promise (inference's ledger): see tests/inference/test_ledger.py.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from portal.models import UsageDay
from portal.quotas import QuotaExceeded, admit_prediction, compute_used_ms
from portal.usage import Usage, usage_record

from .conftest import issue_key, limit

pytestmark = pytest.mark.django_db


def usage(user, version, *, succeeded=True, compute_ms=1500.0, api_key=None, days_ago=0) -> Usage:
    return Usage(
        user_id=user.pk,
        api_key_id=api_key.pk if api_key else None,
        version_id=version.pk,
        day=(timezone.now() - timedelta(days=days_ago)).date(),
        succeeded=succeeded,
        compute_ms=compute_ms,
        bytes_in=100,
        bytes_out=40,
    )


def test_it_charges_compute_and_counts_the_day(quota_backend, alice, version):
    key, _ = issue_key(alice)
    usage_record([usage(alice, version, api_key=key) for _ in range(3)])
    row = UsageDay.objects.get(user=alice)
    assert (row.requests, row.succeeded, row.compute_ms, row.bytes_in, row.bytes_out) == (
        3,
        3,
        4500.0,
        300,
        120,
    )
    assert row.api_key == key and row.version == version and row.day == timezone.now().date()
    assert compute_used_ms(alice) == 4500


def test_later_records_add_to_the_same_row_and_month(quota_backend, alice, version):
    usage_record([usage(alice, version)])
    usage_record([usage(alice, version, compute_ms=500.0)])
    row = UsageDay.objects.get(user=alice)
    assert (row.requests, row.succeeded, row.compute_ms) == (2, 2, 2000.0)
    assert compute_used_ms(alice) == 2000


def test_a_failure_counts_a_request_but_no_compute(quota_backend, alice, version):
    usage_record([usage(alice, version, succeeded=False, compute_ms=30000.0)])
    row = UsageDay.objects.get(user=alice)
    assert (row.requests, row.succeeded, row.compute_ms) == (1, 0, 0)
    assert compute_used_ms(alice) == 0


def test_nothing_to_record_writes_nothing(quota_backend, alice):
    usage_record([])
    assert not UsageDay.objects.exists()
    assert compute_used_ms(alice) == 0


def test_it_keeps_one_ledger_row_per_key_version_and_day(quota_backend, alice, version):
    key, _ = issue_key(alice)
    usage_record([usage(alice, version), usage(alice, version, api_key=key)])
    usage_record([usage(alice, version), usage(alice, version, days_ago=1)])
    rows = {(r.api_key_id, r.version_id, r.day): r.requests for r in UsageDay.objects.all()}
    today = timezone.now().date()
    assert rows == {
        (None, version.pk, today): 2,
        (key.pk, version.pk, today): 1,
        (None, version.pk, today - timedelta(days=1)): 1,
    }


def test_a_user_over_the_compute_quota_is_refused_after_the_charge(
    quota_backend, alice, version, django_capture_on_commit_callbacks
):
    limit(alice, compute_seconds_per_month=2)
    admit_prediction(user=alice, api_key=None)  # the month's compute counter is now known to Redis too
    with django_capture_on_commit_callbacks(execute=True):  # Redis is told once the charge is committed
        usage_record([usage(alice, version, compute_ms=2500.0)])
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=None)
    assert rejected.value.limit_name == "compute_seconds_per_month"
