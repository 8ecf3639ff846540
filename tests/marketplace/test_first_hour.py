"""A newcomer's first steps: a mistyped address, signing up from a model page, the next step after it."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("debug", [False, True])
def test_a_mistyped_model_address_shows_the_sites_404_with_did_you_mean(client, publish, settings, debug):
    settings.DEBUG = debug  # `make run` serves with DEBUG on: the site's page all the same
    publish("digits")
    response = client.get("/models/alice/digitz/")
    page = response.content.decode()
    assert response.status_code == 404
    assert "Page not found" in page and 'href="/models/"' in page  # the site's page, with its navigation
    assert "You're seeing this error because you have" not in page
    assert 'Did you mean\n<a href="/models/alice/digits/">alice/digits</a>' in page


def test_the_api_keeps_json_404s_under_debug(client, settings):
    settings.DEBUG = True
    response = client.get("/api/v1/models/nobody/nothing")
    assert response.status_code == 404 and response.json()["detail"]


def test_a_crash_under_debug_shows_the_sites_500_page(client, settings, monkeypatch):
    settings.DEBUG = True
    from marketplace import views

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(views, "listed_models", crash)
    client.raise_request_exception = False
    response = client.get("/")
    assert response.status_code == 500
    page = response.content.decode()
    assert "Something went wrong" in page and "Traceback" not in page


def test_the_login_pages_sign_up_link_keeps_next(client):
    page = client.get("/accounts/login/", {"next": "/models/demo/digits/"}).content.decode()
    assert 'href="/accounts/signup/?next=/models/demo/digits/"' in page


def test_signing_up_goes_on_to_next_and_never_off_site(client):
    form = {
        "username": "newcomer",
        "email": "n@example.com",
        "password1": "a-long-pass-25",
        "password2": "a-long-pass-25",
    }
    page = client.get("/accounts/signup/", {"next": "/models/demo/digits/"}).content.decode()
    assert 'name="next" value="/models/demo/digits/"' in page
    response = client.post("/accounts/signup/?next=/models/demo/digits/", form)
    assert response.status_code == 302 and response["Location"] == "/models/demo/digits/"
    other = Client()
    form["username"] = "second"
    response = other.post("/accounts/signup/?next=https://evil.example/", form)
    assert response.status_code == 302 and response["Location"] == "/"


def test_a_new_member_is_offered_the_next_steps_until_they_make_a_key(client, alice):
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert "Your next steps" in page and 'href="/settings/keys/"' in page
    from portal.models import ApiKey

    ApiKey.issue(user=alice, name="laptop", scopes=["read", "predict"])
    assert "Your next steps" not in client.get("/").content.decode()


def test_a_call_without_a_key_is_told_how_to_send_one_and_where_to_make_it(client):
    response = client.get("/api/v1/usage")
    assert response.status_code == 401
    detail = response.json()["detail"]
    assert "Authorization: Bearer <key>" in detail and "/settings/keys/" in detail


def test_the_admin_is_branded_and_names_things_well(client, django_user_model):
    staff = django_user_model.objects.create_superuser("root", "root@example.com", "a-long-pass-25")
    client.force_login(staff)
    page = client.get("/admin/").content.decode()
    assert "Modelport administration" in page and "Django administration" not in page
    assert "Webhook deliveries" in page and "deliverys" not in page
