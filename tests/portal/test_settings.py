"""Production refuses to start with development secrets."""

import os
import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def run_django_setup(**env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_refuses_to_start_in_production_without_a_secret_key():
    result = run_django_setup(DEBUG="0", ALLOWED_HOSTS="example.com")
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "started" not in result.stdout


def test_it_refuses_to_start_in_production_without_allowed_hosts():
    result = run_django_setup(DEBUG="0", SECRET_KEY="s" * 50)
    assert result.returncode != 0
    assert "ALLOWED_HOSTS is not set" in result.stderr


def test_it_starts_in_production_with_both_set():
    result = run_django_setup(DEBUG="0", SECRET_KEY="s" * 50, ALLOWED_HOSTS="example.com")
    assert result.returncode == 0, result.stderr
    assert "started" in result.stdout


def test_development_needs_no_settings_at_all():
    result = run_django_setup(DEBUG="1")
    assert result.returncode == 0, result.stderr
