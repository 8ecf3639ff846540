"""The worker is a separate, real process on the real broker."""

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_worker_answers_celery_inspect_ping(celery_worker_process):
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "portal", "inspect", "ping", "--timeout", "5"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "pong" in result.stdout


def test_a_live_web_server_runs_in_separate_processes(live_web, celery_worker_process):
    import time

    import requests

    # Ready needs a worker's heartbeat too, which the worker starts a moment after it answers pings.
    deadline = time.monotonic() + 30
    while (response := requests.get(f"{live_web.url}/v2/health/ready", timeout=10)).status_code != 200:
        assert time.monotonic() < deadline, response.text
        time.sleep(0.2)
    assert response.json() == {
        "ready": True,
        "checks": {"database": True, "broker": True, "cache": True, "worker": True},
    }
