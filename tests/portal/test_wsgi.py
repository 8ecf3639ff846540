"""`portal.wsgi`: a program's API request (no cookie) takes the lean middleware stack and answers as the full
one does; a browser's (a cookie) keeps sessions and CSRF."""

from __future__ import annotations

import io
import json

import pytest
from django.conf import settings
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from portal.models import ApiKey

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def handlers(django_db_setup, django_db_blocker):
    """`portal.wsgi`'s two entry points (importing it runs the start-up check, which reads the database)."""
    with django_db_blocker.unblock():
        from portal.wsgi import application, site
    return application, site


def call(app, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": "application/json",
    }
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = {name.lower(): value for name, value in response_headers}

    # As Django's test client does: the test's database connection (in its transaction) outlives the request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        response = app(environ, start_response)
        answer["body"] = b"".join(response)
        response.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer


def test_the_api_stack_leaves_out_only_what_browsers_need():
    left_out = set(settings.MIDDLEWARE) - set(settings.API_MIDDLEWARE)
    assert "django.contrib.sessions.middleware.SessionMiddleware" in left_out
    assert "django.middleware.csrf.CsrfViewMiddleware" in left_out
    # Logging, security headers, body limits, outages and rate-limit headers stay.
    for kept in ("RequestLogMiddleware", "SecurityMiddleware", "ApiBodyLimitMiddleware", "RateLimitHeaders"):
        assert any(kept in name for name in settings.API_MIDDLEWARE), kept


@pytest.mark.parametrize("path", ["/api/v1/models", "/v2/health/live", "/v2/models/nobody/nothing"])
def test_a_programs_call_answers_as_the_full_stack_does(path, alice, handlers):
    application, site = handlers
    raw_key = ApiKey.issue(user=alice, name="program", scopes=["read"])[1]
    headers = {"Authorization": f"Bearer {raw_key}"}
    lean, full = call(application, "GET", path, headers), call(site, "GET", path, headers)
    assert lean["status"] == full["status"]
    assert json.loads(lean["body"]) == json.loads(full["body"])
    for header in ("x-request-id", "x-frame-options", "content-security-policy", "x-content-type-options"):
        assert (header in lean["headers"]) == (header in full["headers"]), header
    assert "set-cookie" not in lean["headers"]


def test_a_keyed_call_is_the_keys_user_and_a_missing_key_is_anonymous(alice, handlers):
    application, _ = handlers
    raw_key = ApiKey.issue(user=alice, name="program", scopes=["read"])[1]
    assert call(application, "GET", "/api/v1/usage", {"Authorization": f"Bearer {raw_key}"})["status"] == 200
    assert call(application, "GET", "/api/v1/usage")["status"] == 401
    # Keys are managed from the site only: a key's user is not a session.
    assert call(application, "GET", "/api/v1/keys", {"Authorization": f"Bearer {raw_key}"})["status"] == 403


def test_a_browsers_api_call_keeps_its_session_and_csrf(client, alice, handlers):
    application, _ = handlers
    client.force_login(alice)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    body = json.dumps({"name": "from-the-browser", "scopes": ["read"]}).encode()
    # The session is read (the caller is alice), and a POST without the CSRF token is refused.
    assert call(application, "GET", "/api/v1/keys", {"Cookie": cookie})["status"] == 200
    refused = call(application, "POST", "/api/v1/keys", {"Cookie": cookie}, body)
    assert refused["status"] == 403
    assert "CSRF" in json.loads(refused["body"])["detail"]
