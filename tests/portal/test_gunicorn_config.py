"""`gunicorn portal.wsgi` with no flags (API.md's web process) serves with threads, not one sync worker."""

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import PROJECT_ROOT


def printed_config(**env: str) -> dict[str, str]:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    output = subprocess.run(
        [str(gunicorn), "--print-config", "portal.wsgi"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    settings = {}
    for line in output.splitlines():
        name, _, value = line.partition("=")
        settings[name.strip()] = value.strip()
    return settings


def test_the_bare_command_serves_with_threaded_workers():
    settings = printed_config()
    assert settings["worker_class"] == "gthread"
    assert int(settings["threads"]) >= 8
    assert int(settings["workers"]) >= 2


def test_web_concurrency_sets_the_worker_count():
    assert printed_config(WEB_CONCURRENCY="5")["workers"] == "5"
