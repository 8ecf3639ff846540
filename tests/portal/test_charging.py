"""charge_finished: the daily ledger and the month's compute, once per prediction, never for server faults."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from inference.models import Prediction
from portal.models import UsageDay
from portal.quotas import QuotaExceeded, admit_prediction, charge_finished, compute_used_ms

from .conftest import issue_key, limit

pytestmark = pytest.mark.django_db


def finished(user, version, *, status="succeeded", compute_ms=1500.0, api_key=None, days_ago=0, **fields):
    created = timezone.now() - timedelta(days=days_ago)
    return Prediction.objects.create(
        id=uuid.uuid4(),
        user=user,
        api_key=api_key,
        version=version,
        status=status,
        created_at=created,
        finished_at=created,
        compute_ms=compute_ms,
        queue_ms=1.0,
        bytes_in=100,
        bytes_out=40,
        **fields,
    )


def test_it_charges_compute_and_counts_the_day(quota_backend, alice, version):
    key, _ = issue_key(alice)
    predictions = [finished(alice, version, api_key=key) for _ in range(3)]
    assert charge_finished(predictions) == 3
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
    assert all(p.charged for p in Prediction.objects.all())


def test_it_charges_each_prediction_once(quota_backend, alice, version):
    prediction = finished(alice, version)
    assert charge_finished([prediction]) == 1
    assert charge_finished([prediction]) == 0  # a redelivered task records the same row again
    assert charge_finished([prediction.pk]) == 0
    assert UsageDay.objects.get(user=alice).requests == 1
    assert compute_used_ms(alice) == 1500


@pytest.mark.parametrize("status", ["failed", "canceled"])
def test_it_does_not_charge_compute_for_a_failure(quota_backend, alice, version, status):
    prediction = finished(alice, version, status=status, compute_ms=30000.0, error="the worker was lost")
    assert charge_finished([prediction]) == 1
    row = UsageDay.objects.get(user=alice)
    assert (row.requests, row.succeeded, row.compute_ms) == (1, 0, 0)
    assert compute_used_ms(alice) == 0


def test_it_ignores_unfinished_predictions(quota_backend, alice, version):
    prediction = finished(alice, version, status="running")
    assert charge_finished([prediction]) == 0
    assert not UsageDay.objects.exists()


def test_it_keeps_one_ledger_row_per_key_version_and_day(quota_backend, alice, version):
    key, _ = issue_key(alice)
    charge_finished([finished(alice, version), finished(alice, version, api_key=key)])
    charge_finished([finished(alice, version), finished(alice, version, days_ago=1)])
    rows = {(r.api_key_id, r.day): r.requests for r in UsageDay.objects.all()}
    today = timezone.now().date()
    assert rows == {(None, today): 2, (key.pk, today): 1, (None, today - timedelta(days=1)): 1}


def test_a_user_over_the_compute_quota_is_refused_after_the_charge(
    quota_backend, alice, version, django_capture_on_commit_callbacks
):
    limit(alice, compute_seconds_per_month=2)
    admit_prediction(user=alice, api_key=None)  # the month's compute counter is now known to Redis too
    with django_capture_on_commit_callbacks(execute=True):  # Redis is told once the charge is committed
        charge_finished([finished(alice, version, compute_ms=2500.0)])
    with pytest.raises(QuotaExceeded) as rejected:
        admit_prediction(user=alice, api_key=None)
    assert rejected.value.limit_name == "compute_seconds_per_month"
