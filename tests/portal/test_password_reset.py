"""A user who forgot their password asks for a link by mail, follows it and sets a new one; mail goes
through EMAIL_URL; sign-ups and reset mails per client are limited."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from django.contrib.auth import authenticate
from django.core import mail
from django.test import Client, RequestFactory

from tests.conftest import PASSWORD, PROJECT_ROOT

pytestmark = pytest.mark.django_db

RESET = "/accounts/password/reset/"
NEW_PASSWORD = "a-brand-new-and-long-passphrase"


def link_in(message) -> str:
    match = re.search(r"https?://[^/\s]+(/accounts/password/reset/[^\s]+/)", message.body)
    assert match, message.body
    return match.group(1)


def can_log_in(username: str, password: str) -> bool:
    request = RequestFactory().post("/accounts/login/")
    return authenticate(request, username=username, password=password) is not None


def test_a_user_resets_a_forgotten_password_through_the_mailed_link(client, alice):
    page = client.get(RESET)
    assert page.status_code == 200
    assert "Reset your password" in page.content.decode()

    response = client.post(RESET, {"email": "alice@example.com"})
    assert response.status_code == 302
    assert client.get(response["Location"]).content.decode().count("Check your mail") >= 1

    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["alice@example.com"]
    assert message.subject == "Reset your Modelport password"
    assert "Hello alice" in message.body

    form = client.get(link_in(message), follow=True)
    assert "Choose a new password" in form.content.decode()
    done = client.post(
        form.redirect_chain[-1][0],
        {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
        follow=True,
    )
    assert "Password set" in done.content.decode()
    assert can_log_in("alice", NEW_PASSWORD)
    assert not can_log_in("alice", PASSWORD)


def test_the_link_works_only_once(client, alice):
    client.post(RESET, {"email": "alice@example.com"})
    link = link_in(mail.outbox[0])
    form = client.get(link, follow=True)
    client.post(form.redirect_chain[-1][0], {"new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD})

    again = Client().get(link, follow=True)
    assert "This link no longer works" in again.content.decode()


def test_an_unknown_address_gets_the_same_answer_and_no_mail(client, alice):
    response = client.post(RESET, {"email": "nobody@example.com"})
    assert response.status_code == 302
    assert response["Location"] == "/accounts/password/reset/sent/"
    assert mail.outbox == []


def test_the_login_page_links_to_the_reset(client):
    assert 'href="/accounts/password/reset/"' in client.get("/accounts/login/").content.decode()


def test_reset_mails_per_client_are_limited(client, alice, settings):
    settings.PASSWORD_RESETS_PER_HOUR = 2
    for _ in range(2):
        assert client.post(RESET, {"email": "alice@example.com"}).status_code == 302
    response = client.post(RESET, {"email": "alice@example.com"})
    assert response.status_code == 429
    assert "Too many password resets" in response.content.decode()
    assert "Try again after" in response.content.decode()
    assert int(response["Retry-After"]) >= 1
    assert len(mail.outbox) == 2


def test_sign_ups_per_client_are_limited(client, settings, django_user_model):
    settings.SIGNUPS_PER_HOUR = 2

    def sign_up(name: str):
        return Client(REMOTE_ADDR="192.0.2.50").post(
            "/accounts/signup/",
            {
                "username": name,
                "email": f"{name}@example.com",
                "password1": NEW_PASSWORD,
                "password2": NEW_PASSWORD,
            },
        )

    assert [sign_up(name).status_code for name in ("u1", "u2")] == [302, 302]
    refused = sign_up("u3")
    assert refused.status_code == 429
    assert "Too many sign-ups" in refused.content.decode()
    assert not django_user_model.objects.filter(username="u3").exists()


EMAIL_SETTINGS = """
import json, django
django.setup()
from django.conf import settings
print(json.dumps({name: getattr(settings, name) for name in (
    "EMAIL_BACKEND", "EMAIL_HOST", "EMAIL_PORT", "EMAIL_HOST_USER", "EMAIL_HOST_PASSWORD", "EMAIL_USE_TLS"
)}))
"""


def email_settings(**env) -> dict:
    environment = {k: v for k, v in os.environ.items() if k != "EMAIL_URL"}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", EMAIL_SETTINGS],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mail_goes_to_the_console_by_default():
    assert email_settings()["EMAIL_BACKEND"] == "django.core.mail.backends.console.EmailBackend"


def test_email_url_configures_smtp_with_starttls_on_the_submission_port():
    seen = email_settings(EMAIL_URL="smtp://mailer:p%40ss@mail.example.com:587")
    assert seen == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "mail.example.com",
        "EMAIL_PORT": 587,
        "EMAIL_HOST_USER": "mailer",
        "EMAIL_HOST_PASSWORD": "p@ss",
        "EMAIL_USE_TLS": True,
    }
