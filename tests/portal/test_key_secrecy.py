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
