"""Several OS processes admitting at once against the real Redis and PostgreSQL: exactly the limit gets in."""

from __future__ import annotations

import multiprocessing
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connections

from portal.quotas import current_windows

from .conftest import issue_key, limit

PROCESSES = 6
ATTEMPTS_EACH = 10


def admit_many(user_id: int, key_id: int | None, backend: str, barrier, results) -> None:
    from django.conf import settings

    from portal.models import ApiKey
    from portal.quotas import QuotaExceeded, admit_prediction

    settings.QUOTA_BACKEND = backend
    user = get_user_model().objects.get(pk=user_id)
    api_key = ApiKey.objects.get(pk=key_id) if key_id else None
    barrier.wait(timeout=60)
    admitted = rejected = 0
    for _ in range(ATTEMPTS_EACH):
        try:
            admit_prediction(user=user, api_key=api_key)
            admitted += 1
        except QuotaExceeded:
            rejected += 1
    connections.close_all()
    results.put((admitted, rejected))


def run_in_processes(user, api_key, backend: str) -> list[tuple[int, int]]:
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(PROCESSES), context.Queue()
    connections.close_all()  # each child opens its own connection
    children = [
        context.Process(
            target=admit_many, args=(user.pk, api_key.pk if api_key else None, backend, barrier, results)
        )
        for _ in range(PROCESSES)
    ]
    for child in children:
        child.start()
    outcomes = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    return outcomes


@pytest.mark.django_db(transaction=True)
def test_exactly_the_daily_limit_is_admitted_across_processes(quota_backend, alice):
    limit(alice, requests_per_day=20, requests_per_minute=1000)
    outcomes = run_in_processes(alice, None, quota_backend)
    assert sum(admitted for admitted, _ in outcomes) == 20
    assert sum(rejected for _, rejected in outcomes) == PROCESSES * ATTEMPTS_EACH - 20
    assert current_windows(alice)[1].used == 20


@pytest.mark.django_db(transaction=True)
def test_exactly_the_minute_limit_is_admitted_across_processes(quota_backend, alice):
    limit(alice, requests_per_minute=17, requests_per_day=1000)
    if time.time() % 60 > 45:  # a minute boundary inside the run would open a second window
        time.sleep(61 - time.time() % 60)
    outcomes = run_in_processes(alice, None, quota_backend)
    assert sum(admitted for admitted, _ in outcomes) == 17
    minute, day = current_windows(alice)
    assert (minute.used, day.used) == (17, 17)


@pytest.mark.django_db(transaction=True)
def test_exactly_a_keys_cap_is_admitted_across_processes(quota_backend, alice):
    limit(alice, requests_per_day=1000, requests_per_minute=1000)
    capped, _ = issue_key(alice, requests_per_day=11)
    outcomes = run_in_processes(alice, capped, quota_backend)
    assert sum(admitted for admitted, _ in outcomes) == 11
    minute, day, key_day = current_windows(alice, capped)
    assert (day.used, key_day.used) == (11, 11)
