"""`HTTPS=1` (behind a TLS-terminating proxy): HSTS, a redirect to https except for the health probes, Secure
cookies, the proxy's X-Forwarded-Proto trusted; and `check --deploy` finds nothing to warn about."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

from tests.conftest import PROJECT_ROOT

PRODUCTION = {
    "DEBUG": "0",
    "SECRET_KEY": secrets.token_urlsafe(64),
    "ALLOWED_HOSTS": "modelport.example.com",
}

# Runs in a fresh process (settings are read at start-up) and prints what a client would see.
PROBE = """
import json, django
django.setup()
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
client = Client(HTTP_HOST="modelport.example.com")
plain = client.get("/accounts/login/")
health = client.get("/v2/health/live")
secure = client.get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")
cookie = secure.cookies["csrftoken"]
print(json.dumps({
    "plain": [plain.status_code, plain.get("Location")],
    "health": health.status_code,
    "secure": secure.status_code,
    "hsts": secure.get("Strict-Transport-Security"),
    "csrf_cookie_secure": bool(cookie["secure"]),
    "plain_hsts": plain.get("Strict-Transport-Security"),
}))
"""


def run(args: list[str], **env) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in {"HTTPS", *PRODUCTION}}
    environment.update(PRODUCTION, **env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_check_deploy_finds_nothing_to_warn_about_with_https_on():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], HTTPS="1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_the_missing_tls_settings_without_it():
    result = run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"])
    assert result.returncode != 0
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in result.stderr


def test_https_redirects_plain_requests_but_not_the_health_probe():
    result = run(["-c", PROBE], HTTPS="1")
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [301, "https://modelport.example.com/accounts/login/"]
    assert seen["health"] == 200
    assert seen["secure"] == 200
    assert seen["hsts"] == "max-age=31536000; includeSubDomains; preload"
    assert seen["csrf_cookie_secure"] is True


def test_without_https_nothing_redirects_and_no_hsts_is_sent():
    result = run(["-c", PROBE])
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["plain"] == [200, None]
    assert seen["hsts"] is None
    assert seen["csrf_cookie_secure"] is False
