"""Request log lines: an id per request, echoed as X-Request-ID; JSON lines when LOG_FORMAT=json."""

import json
import logging

import pytest

from portal.logs import JsonFormatter, PlainFormatter

pytestmark = pytest.mark.django_db


def test_every_response_carries_a_request_id(client):
    first, second = client.get("/v2/health/live"), client.get("/v2/health/live")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != second["X-Request-ID"]


def test_a_sane_request_id_from_the_caller_is_kept_and_a_hostile_one_replaced(client):
    assert client.get("/v2/health/live", HTTP_X_REQUEST_ID="trace-42")["X-Request-ID"] == "trace-42"
    hostile = client.get("/v2/health/live", HTTP_X_REQUEST_ID="a b\nInjected: yes")["X-Request-ID"]
    assert hostile != "a b\nInjected: yes" and len(hostile) == 32


def test_the_request_line_names_the_key_prefix_never_the_key(client, alice, caplog):
    from portal.models import ApiKey

    key = ApiKey.issue(user=alice, name="t", scopes=["read"])[1]
    with caplog.at_level(logging.INFO, logger="modelport.requests"):
        client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_REQUEST_ID="find-me")
    (record,) = [r for r in caplog.records if getattr(r, "request_id", None) == "find-me"]
    assert record.key_prefix == ApiKey.prefix_of(key) and record.status == 200
    line = JsonFormatter().format(record)
    assert key not in line and key not in PlainFormatter().format(record)
    parsed = json.loads(line)
    assert parsed["message"] == "request" and parsed["path"] == "/api/v1/models"
    assert parsed["key_prefix"] == ApiKey.prefix_of(key) and parsed["duration_ms"] >= 0
