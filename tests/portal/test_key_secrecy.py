"""A key's secret is shown once and is nowhere afterwards: not in any table, the cache, or the logs."""

from __future__ import annotations

import logging

import pytest
from django.db import connection

from portal.quotas import redis_client

from .conftest import bearer

pytestmark = pytest.mark.django_db


def every_row_as_text() -> str:
    """Every row of every table in the database, as PostgreSQL prints it."""
    dump = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT t::text FROM "{table}" AS t')  # noqa: S608 - names from the catalog
            dump.extend(row[0] for row in cursor.fetchall())
    return "\n".join(dump)


def everything_in_redis() -> bytes:
    client = redis_client()
    return b"\n".join(key + b"=" + (client.dump(key) or b"") for key in client.scan_iter(count=1000))


def test_the_secret_leaves_no_trace(alice_client, caplog):
    caplog.set_level(logging.DEBUG)
    response = alice_client.post("/settings/keys/", {"name": "laptop", "scopes": ["read", "predict"]})
    assert response.status_code == 200
    raw_key = response.context["raw_key"]
    secret = raw_key.split("_", 2)[2]
    assert raw_key in response.content.decode()

    # Use it (this fills the key cache) and fail with a wrong one (error paths log nothing secret either).
    assert alice_client.get("/api/v1/usage", **bearer(raw_key)).status_code == 200
    assert alice_client.get("/api/v1/usage", **bearer(raw_key[:-2] + "zz")).status_code == 401

    dump = every_row_as_text()
    assert "portal_apikey" in connection.introspection.table_names()
    assert raw_key.split("_")[1] in dump  # the public prefix is stored (the dump is real)
    assert secret not in dump and raw_key not in dump
    redis_dump = everything_in_redis()
    assert b"portal:key:" in redis_dump  # the cached key entry is there
    assert secret.encode() not in redis_dump
    assert secret not in caplog.text

    # The page does not show it again.
    assert secret not in alice_client.get("/settings/keys/").content.decode()


def test_error_pages_and_answers_do_not_echo_a_key(client, alice, rf, settings):
    from .conftest import issue_key

    _, raw_key = issue_key(alice)
    secret = raw_key.split("_", 2)[2]
    wrong = client.get("/api/v1/usage", **bearer(raw_key[:-2] + "zz"))
    assert wrong.status_code == 401 and secret[:-2] not in wrong.content.decode()

    # Even the DEBUG error page (never on in production) masks the Authorization header in the request.
    settings.DEBUG = True
    page = error_page_for(rf.get("/api/v1/usage", **bearer(raw_key)))
    assert b"boom" in page and b"HTTP_AUTHORIZATION" in page
    assert secret.encode() not in page


def error_page_for(request) -> bytes:
    """The DEBUG page of an error raised while serving `request` (the only local here is the request)."""
    import sys

    from django.views.debug import technical_500_response

    try:
        raise RuntimeError("boom")
    except RuntimeError:
        return technical_500_response(request, *sys.exc_info()).content


def test_an_error_report_from_inside_the_key_check_does_not_show_the_key(alice, rf, monkeypatch):
    from portal import authentication

    from .conftest import issue_key

    _, raw_key = issue_key(alice)
    secret = raw_key.split("_", 2)[2]

    def broken_lookup(prefix):
        raise RuntimeError("the cache is down")

    monkeypatch.setattr(authentication, "_load_key", broken_lookup)
    report = error_report_while_authenticating(rf.get("/api/v1/usage", **bearer(raw_key)))
    assert "the cache is down" in report and "authenticate_bearer" in report
    assert "<td>raw_key</td>" in report and "<td>header</td>" in report  # the frame's variables are listed…
    assert secret not in report  # …with their values masked


def error_report_while_authenticating(request) -> str:
    """The report Django mails to admins (DEBUG off) for an error inside `authenticate_bearer`."""
    import sys

    from django.views.debug import ExceptionReporter

    from portal.authentication import authenticate_bearer

    try:
        authenticate_bearer(request.META["HTTP_AUTHORIZATION"])
    except RuntimeError:
        return ExceptionReporter(request, *sys.exc_info(), is_email=True).get_traceback_html()
    raise AssertionError("the lookup did not fail")
