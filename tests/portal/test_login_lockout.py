"""Repeated failed logins lock the account for that client: a 429 page saying until when, even for the right
password, until the cool-off ends or an admin lifts it."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.test import Client

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db

LOGIN = "/accounts/login/"


def attempt(client: Client, password: str, username: str = "alice"):
    return client.post(LOGIN, {"username": username, "password": password})


def fail_until_locked(client: Client, username: str = "alice"):
    responses = [attempt(client, f"wrong-{n}", username) for n in range(settings.AXES_FAILURE_LIMIT)]
    assert [r.status_code for r in responses[:-1]] == [200] * (settings.AXES_FAILURE_LIMIT - 1)
    return responses[-1]


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


def shown_until(response) -> datetime:
    match = re.search(r'<time datetime="([^"]+)">', response.content.decode())
    assert match, "the page does not say until when"
    return datetime.fromisoformat(match.group(1))


def test_the_failure_that_reaches_the_limit_gets_a_429_page_saying_until_when(client, alice):
    response = fail_until_locked(client)
    assert response.status_code == 429
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "Try again after" in page
    last_failure = AccessAttempt.objects.get(username="alice").attempt_time
    assert shown_until(response) == last_failure + settings.AXES_COOLOFF_TIME
    assert int(response["Retry-After"]) == pytest.approx(settings.AXES_COOLOFF_TIME.total_seconds(), abs=60)


def test_the_lockout_holds_for_the_right_password_too(client, alice):
    fail_until_locked(client)
    response = attempt(client, PASSWORD)
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert not logged_in(client)


def test_tries_during_the_lockout_do_not_push_its_end_back(client, alice):
    first = fail_until_locked(client)
    later = attempt(client, "still-wrong")
    assert later.status_code == 429
    assert shown_until(later) == shown_until(first)


def test_it_locks_the_username_only_for_the_client_that_failed(client, alice):
    fail_until_locked(client)
    elsewhere = Client(REMOTE_ADDR="203.0.113.7")
    response = attempt(elsewhere, PASSWORD)
    assert response.status_code == 302
    assert logged_in(elsewhere)


def test_it_does_not_lock_other_usernames_for_that_client(client, alice, bob):
    fail_until_locked(client, "alice")
    response = attempt(client, PASSWORD, "bob")
    assert response.status_code == 302


def test_the_lockout_expires_after_the_cool_off(client, alice):
    fail_until_locked(client)
    assert attempt(client, PASSWORD).status_code == 429
    # Let the cool-off pass: the failures are now that much older.
    cool_off = settings.AXES_COOLOFF_TIME + timedelta(seconds=1)
    for row in AccessAttempt.objects.all():
        row.attempt_time -= cool_off
        row.save(update_fields=["attempt_time"])
    response = attempt(client, PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_a_successful_login_starts_the_count_again(client, alice):
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(client, f"wrong-{n}").status_code == 200
    assert attempt(client, PASSWORD).status_code == 302
    client.post("/accounts/logout/")
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        assert attempt(client, f"wrong-again-{n}").status_code == 200
    assert attempt(client, PASSWORD).status_code == 302


def test_an_admin_sees_the_lockout_and_lifts_it(client, alice, django_user_model):
    fail_until_locked(client)
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "x" * 20))

    listing = admin.get("/admin/axes/accessattempt/")
    assert listing.status_code == 200
    assert "alice" in listing.content.decode()
    assert "127.0.0.1" in listing.content.decode()

    locked = AccessAttempt.objects.get(username="alice")
    response = admin.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": [locked.pk], "post": "yes"},
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.filter(username="alice").exists()

    response = attempt(client, PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_the_admin_login_is_throttled_as_well(client, django_user_model):
    django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)
    for n in range(settings.AXES_FAILURE_LIMIT - 1):
        client.post("/admin/login/", {"username": "root", "password": f"wrong-{n}"})
    response = client.post("/admin/login/", {"username": "root", "password": "wrong-again"})
    assert response.status_code == 429
    response = client.post("/admin/login/", {"username": "root", "password": PASSWORD})
    assert response.status_code == 429


def test_a_login_by_code_without_a_request_is_not_counted_and_still_checks_the_password(alice):
    # The test client's login() and shell scripts call authenticate() with no request: no client to lock.
    assert Client().login(username="alice", password=PASSWORD) is True
    assert Client().login(username="alice", password="wrong") is False
    assert not AccessAttempt.objects.exists()
