"""The login lock-out and the count of invalid keys hold across web processes: failures spread over two
gunicorn servers add up, and a server started afterwards (a restart) still refuses."""

from __future__ import annotations

import re
import secrets

import pytest
import requests
from django.conf import settings

from portal.models import KEY_PREFIX_LENGTH
from tests.conftest import PASSWORD, WebServer

from .conftest import issue_key

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def second_web(django_db_setup, django_db_blocker, tmp_path_factory):
    server = WebServer(tmp_path_factory.mktemp("web2") / "gunicorn.log")
    server.start()
    yield server
    server.stop()


def log_in(session: requests.Session, server: WebServer, password: str) -> requests.Response:
    form = session.get(f"{server.url}/accounts/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    return session.post(
        f"{server.url}/accounts/login/",
        data={"username": "alice", "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{server.url}/accounts/login/"},
        allow_redirects=False,
        timeout=30,
    )


def test_failures_on_two_servers_add_up_to_one_lockout_that_outlives_a_restart(
    live_web, second_web, alice, tmp_path
):
    servers = [live_web, second_web]
    session = requests.Session()
    answers = [
        log_in(session, servers[n % 2], f"wrong-{n}").status_code for n in range(settings.AXES_FAILURE_LIMIT)
    ]
    assert answers == [200] * (settings.AXES_FAILURE_LIMIT - 1) + [429]

    for server in servers:
        refused = log_in(session, server, PASSWORD)
        assert refused.status_code == 429
        assert "Try again after" in refused.text

    restarted = WebServer(tmp_path / "restarted.log")
    restarted.start()
    try:
        assert log_in(requests.Session(), restarted, PASSWORD).status_code == 429
    finally:
        restarted.stop()


def test_invalid_keys_on_two_servers_add_up_while_a_valid_key_keeps_working(live_web, second_web, alice):
    _, raw_key = issue_key(alice)
    limit = settings.API_KEY_FAILURE_LIMIT
    servers = [live_web, second_web]

    def call(server: WebServer, key: str) -> requests.Response:
        return requests.get(
            f"{server.url}/api/v1/usage", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def guessed() -> str:
        return f"mp_{secrets.token_hex(KEY_PREFIX_LENGTH // 2)}_{secrets.token_urlsafe(32)}"

    answers = [call(servers[n % 2], guessed()).status_code for n in range(limit)]
    assert answers == [401] * limit
    for server in servers:
        refused = call(server, guessed())
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert call(server, raw_key).status_code == 200
