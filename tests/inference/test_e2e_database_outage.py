"""PostgreSQL stopped and started again under a trickle of requests to a live gunicorn and a Celery worker.

The deployment runs on a PostgreSQL and a Redis of its own, started here (the session's servers, which other
tests use, are never touched); its rows are made and read through `manage.py`-style subprocesses and psycopg,
since this test process's ORM is bound to the session's test database. Every answer is 200, or 503 with
Retry-After; each prediction answered 200 during the outage is recorded exactly once after it; with nothing
restarted, an upload validates and an async job runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg2
import pytest

from tests import conftest
from tests.servers import PostgresServer, RedisServer, as_postgres

from .test_e2e_outages import DIGITS_BODY, Deployment, assert_served_or_unavailable, one_round, upload

pytestmark = [pytest.mark.e2e]

SETUP = """
import django, json
django.setup()
from django.contrib.auth import get_user_model
from portal.models import ApiKey
from portal.services import quota_set
from tests.inference import builders
alice = get_user_model().objects.create_user("alice", "alice@example.com", "correct-horse-battery-staple")
quota_set(user=alice, requests_per_minute=100_000, requests_per_day=1_000_000)
builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
print(json.dumps({"key": ApiKey.issue(user=alice, name="outage", scopes=["read", "predict", "upload"])[1]}))
"""


def manage(database_url: str, redis_url: str, *args: str) -> str:
    env = dict(
        os.environ, DATABASE_URL=database_url, REDIS_URL=f"{redis_url}/1", CELERY_BROKER_URL=f"{redis_url}/0"
    )
    done = subprocess.run(
        [sys.executable, *args],
        cwd=conftest.PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_async_job(deployment: Deployment, key: str, when: str) -> None:
    job = deployment.post(
        "/api/v1/models/alice/digits/predict", key, json=DIGITS_BODY, headers={"Prefer": "respond-async"}
    )
    assert job.status_code == 202, job.text[:300]
    job_url = f"/api/v1/predictions/{job.json()['id']}"
    deployment.wait_until(
        lambda: deployment.get(job_url, key).json()["status"] == "succeeded",
        f"the async job sent {when} never ran",
    )


@pytest.fixture
def own_servers():
    root = Path(tempfile.mkdtemp(prefix="modelport-outage-"))
    os.chmod(root, 0o755)  # noqa: S103  (the postgres user must reach its cluster folder inside)
    postgres, redis = PostgresServer(root), RedisServer(root)
    try:
        url = postgres.start()
        as_postgres(
            ["createdb", "-h", "127.0.0.1", "-p", str(postgres.port), "-U", "postgres", "modelport"],
            check=True,
        )
        yield postgres, url, redis, redis.start(), root
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_stopped_and_started_again_under_a_trickle(own_servers, monkeypatch):
    postgres, database_url, redis_server, redis_url, root = own_servers
    manage(database_url, redis_url, "manage.py", "migrate", "--no-input")
    key = json.loads(manage(database_url, redis_url, "-c", SETUP).strip().splitlines()[-1])["key"]
    # The deployment's processes are pointed at this database, not the session's test database.
    monkeypatch.setattr(conftest, "database_url_for_test_db", lambda: database_url)
    deployment = Deployment(root, redis_url).start()
    try:
        assert all(response.status_code == 200 for response in one_round(deployment, key).values())
        # The worker's task process holds a database connection when PostgreSQL goes away.
        run_async_job(deployment, key, "before the outage")

        postgres.stop()
        answered = []
        seen_unavailable = set()
        for _ in range(3):
            answers = one_round(deployment, key)
            assert_served_or_unavailable(answers)
            seen_unavailable |= {name for name, response in answers.items() if response.status_code == 503}
            if answers["predict"].status_code == 200:
                answered.append(answers["predict"].json()["id"])
        down_upload = upload(deployment, key, "during-the-outage")
        assert down_upload.status_code in (201, 503), down_upload.text[:300]
        assert {"catalog", "ready"} <= seen_unavailable

        postgres.start_again()

        def recovered() -> bool:
            answers = one_round(deployment, key)
            assert_served_or_unavailable(answers)
            return all(response.status_code == 200 for response in answers.values())

        deployment.wait_until(recovered, "calls did not succeed again after PostgreSQL came back")

        # Every prediction answered during the outage is recorded once it is back, exactly once.
        def recorded() -> dict[str, int]:
            connection = psycopg2.connect(database_url)
            try:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT id::text, count(*) FROM inference_prediction"
                        " WHERE id::text = ANY(%s) GROUP BY id",
                        [answered],
                    )
                    return dict(cursor.fetchall())
            finally:
                connection.close()

        deployment.wait_until(
            lambda: len(recorded()) == len(answered), "calls answered 200 were not recorded"
        )
        assert set(recorded().values()) <= {1}

        response = upload(deployment, key, "after-the-outage")
        assert response.status_code == 201, response.text[:300]
        version_url = "/api/v1/models/alice/after-the-outage/versions/1"
        deployment.wait_until(
            lambda: deployment.get(version_url, key).json().get("status") == "ready",
            "the upload made after PostgreSQL came back was never validated",
        )
        run_async_job(deployment, key, "after PostgreSQL came back")
    finally:
        deployment.stop()
