"""Several OS processes admitting at once against the real Redis and PostgreSQL: exactly the limit gets in."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from portal.quotas import current_windows
from tests.conftest import PROJECT_ROOT, database_url_for_test_db

from .conftest import issue_key, limit

PROCESSES = 6
ATTEMPTS_EACH = 10

# Each child is a fresh interpreter (a fork of this multi-threaded test process could hang on a copied lock):
# it connects to the run's PostgreSQL and Redis, says "ready", waits for "go" so all start at once.
CHILD = """
import sys

import django

django.setup()
from django.contrib.auth import get_user_model
from django.db import connection

from portal.models import ApiKey
from portal.quotas import QuotaExceeded, admit_prediction, effective_limits, quota_backend, redis_client

user_id, key_id, attempts = (int(arg) for arg in sys.argv[1:4])
user = get_user_model().objects.get(pk=user_id)
api_key = ApiKey.objects.get(pk=key_id) if key_id else None
effective_limits(user)
connection.ensure_connection()
if quota_backend() == "redis":
    redis_client().ping()
print("ready", flush=True)
sys.stdin.readline()
admitted = 0
for _ in range(attempts):
    try:
        admit_prediction(user=user, api_key=api_key)
        admitted += 1
    except QuotaExceeded:
        pass
print(admitted, flush=True)
"""


def run_in_processes(user, api_key, backend: str) -> list[tuple[int, int]]:
    env = dict(
        os.environ,
        DATABASE_URL=database_url_for_test_db(),
        DJANGO_SETTINGS_MODULE="portal.settings",
        QUOTA_BACKEND=backend,
    )
    args = [str(user.pk), str(api_key.pk if api_key else 0), str(ATTEMPTS_EACH)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, *args],
            cwd=PROJECT_ROOT,
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for child in children:
            line = child.stdout.readline()
            assert line.strip() == "ready", child.stderr.read()
        for child in children:
            child.stdin.write("go\n")
            child.stdin.flush()
        outcomes = []
        for child in children:
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
            admitted = int(out.strip())
            outcomes.append((admitted, ATTEMPTS_EACH - admitted))
        return outcomes
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()


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
