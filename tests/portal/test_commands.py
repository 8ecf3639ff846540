"""`createapikey` prints a working key alone on its last line; `quota` sets overrides and prints limits."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from portal.models import ApiKey
from portal.quotas import effective_limits

from .conftest import bearer

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_createapikey_prints_a_working_key_last(client, alice):
    output = run("createapikey", "alice", "--scopes", "read,predict,upload", "--name", "deploy")
    last_line = output.rstrip("\n").splitlines()[-1]
    assert last_line.startswith("mp_") and " " not in last_line
    key = ApiKey.objects.get(name="deploy")
    assert key.scopes == ["predict", "read", "upload"]
    assert client.get("/api/v1/usage", **bearer(last_line)).status_code == 200


def test_createapikey_rejects_an_unknown_user_or_scope(alice):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("createapikey", "nobody", "--scopes", "read")
    with pytest.raises(CommandError, match="Unknown scopes: admin"):
        run("createapikey", "alice", "--scopes", "read,admin")


def test_quota_sets_overrides_and_prints_effective_limits(alice):
    output = run(
        "quota",
        "alice",
        "--requests-per-minute",
        "7",
        "--requests-per-day",
        "70",
        "--compute-seconds-per-month",
        "700",
    )
    assert "plan Free" in output
    assert "requests per minute:       7" in output
    assert "requests per day:          70" in output
    assert "compute seconds per month: 700" in output
    limits = effective_limits(alice)
    assert (limits.requests_per_minute, limits.requests_per_day, limits.compute_seconds_per_month) == (
        7,
        70,
        700,
    )


def test_quota_without_options_prints_the_plan_limits(alice):
    output = run("quota", "alice")
    assert "requests per minute:       60" in output and "requests per day:          1000" in output


def test_quota_rejects_an_unknown_user(alice):
    with pytest.raises(CommandError, match="No user named"):
        run("quota", "nobody")
