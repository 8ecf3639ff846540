"""Sign-up, login and logout through the real forms, with CSRF checks on."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser():
    return Client(enforce_csrf_checks=True)


def csrf_token_of(response) -> str:
    match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', response.content)
    assert match, "the form carries no CSRF token"
    return match.group(1).decode()


def test_it_signs_up_a_new_user_and_logs_them_in(browser):
    page = browser.get("/accounts/signup/")
    assert page.status_code == 200
    assert b"Create your account" in page.content

    response = browser.post(
        "/accounts/signup/",
        {
            "username": "carol",
            "email": "carol@example.com",
            "password1": "a-long-and-unusual-passphrase",
            "password2": "a-long-and-unusual-passphrase",
            "csrfmiddlewaretoken": csrf_token_of(page),
        },
        follow=True,
    )
    assert response.status_code == 200
    assert b"Welcome to Modelport, carol." in response.content
    assert User.objects.filter(username="carol", email="carol@example.com").exists()
    assert response.context["user"].username == "carol"


def test_it_rejects_a_signup_without_the_csrf_token(browser):
    response = browser.post(
        "/accounts/signup/",
        {
            "username": "mallory",
            "email": "m@example.com",
            "password1": "x-long-pass-123",
            "password2": "x-long-pass-123",
        },
    )
    assert response.status_code == 403
    assert not User.objects.filter(username="mallory").exists()


def test_it_shows_form_errors_for_mismatched_passwords(browser):
    page = browser.get("/accounts/signup/")
    response = browser.post(
        "/accounts/signup/",
        {
            "username": "dave",
            "email": "dave@example.com",
            "password1": "a-long-and-unusual-passphrase",
            "password2": "something-else-entirely",
            "csrfmiddlewaretoken": csrf_token_of(page),
        },
    )
    assert response.status_code == 200
    assert b"password fields didn" in response.content
    assert not User.objects.filter(username="dave").exists()


def test_it_logs_in_and_out(browser, alice):
    from tests.conftest import PASSWORD

    page = browser.get("/accounts/login/")
    response = browser.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": csrf_token_of(page)},
        follow=True,
    )
    assert response.context["user"].username == "alice"
    assert b"Log out" in response.content

    home = browser.get("/")
    response = browser.post("/accounts/logout/", {"csrfmiddlewaretoken": csrf_token_of(home)}, follow=True)
    assert response.status_code == 200
    assert not response.context["user"].is_authenticated
    assert b"Log in" in response.content


def test_it_refuses_a_wrong_password(browser, alice):
    page = browser.get("/accounts/login/")
    response = browser.post(
        "/accounts/login/",
        {"username": "alice", "password": "wrong", "csrfmiddlewaretoken": csrf_token_of(page)},
    )
    assert response.status_code == 200
    assert b"enter a correct username and password" in response.content
    assert not response.context["user"].is_authenticated


def test_logout_by_get_is_refused(client, alice):
    client.force_login(alice)
    assert client.get("/accounts/logout/").status_code == 405
