"""Sign-up, login, logout and the navigation, in Chromium against the real Django server (no routing)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def nav(page):
    return page.get_by_role("navigation", name="Main")


def test_a_visitor_signs_up_through_the_form_and_sees_the_members_navigation(page, live_server):
    page.goto(live_server.url + "/")
    expect(nav(page).get_by_role("link", name="API keys")).to_have_count(0)
    nav(page).get_by_role("link", name="Sign up").click()
    expect(page.get_by_role("heading", name="Create your account")).to_be_visible()

    page.get_by_label("Username").fill("carol")
    page.get_by_label("Email").fill("carol@example.com")
    page.get_by_label("Password", exact=True).fill("a-long-and-unusual-passphrase")
    page.get_by_label("Password confirmation").fill("a-long-and-unusual-passphrase")
    page.get_by_role("button", name="Sign up").click()

    expect(page.get_by_role("status")).to_contain_text("Welcome to Modelport, carol.")
    expect(nav(page)).to_contain_text("carol")
    expect(nav(page).get_by_role("link", name="API keys")).to_have_attribute("href", "/settings/keys/")
    expect(nav(page).get_by_role("link", name="Usage")).to_have_attribute("href", "/settings/usage/")
    expect(nav(page).get_by_role("button", name="Log out")).to_be_visible()
    assert User.objects.filter(username="carol", email="carol@example.com").exists()


def test_a_signup_with_mismatched_passwords_shows_the_error_next_to_the_field(page, live_server):
    page.goto(live_server.url + "/accounts/signup/")
    page.get_by_label("Username").fill("dave")
    page.get_by_label("Email").fill("dave@example.com")
    page.get_by_label("Password", exact=True).fill("a-long-and-unusual-passphrase")
    page.get_by_label("Password confirmation").fill("something-else-entirely")
    page.get_by_role("button", name="Sign up").click()

    expect(page.locator(".field.has-error")).to_contain_text("The two password fields didn’t match.")
    expect(page.get_by_label("Username")).to_have_value("dave")
    assert not User.objects.filter(username="dave").exists()


def test_a_member_logs_in_logs_out_and_is_refused_with_a_wrong_password(page, live_server, alice):
    page.goto(live_server.url + "/")
    nav(page).get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(nav(page)).to_contain_text("alice")
    assert page.url == live_server.url + "/"

    nav(page).get_by_role("button", name="Log out").click()
    expect(nav(page).get_by_role("link", name="Log in")).to_be_visible()
    expect(nav(page).get_by_role("link", name="API keys")).to_have_count(0)

    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not-her-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_contain_text("enter a correct username and password")
    expect(nav(page).get_by_role("link", name="Log in")).to_be_visible()


def test_login_returns_to_the_page_that_asked_for_it(page, live_server, alice):
    # The try-it widget sends anonymous visitors to /accounts/login/?next=<model page>.
    page.goto(live_server.url + "/accounts/password/")
    assert page.url.startswith(live_server.url + "/accounts/login/?next=")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    assert page.url == live_server.url + "/accounts/password/"


def test_the_skip_link_comes_first_for_keyboard_users(page, live_server):
    page.goto(live_server.url + "/")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    assert skip.bounding_box()["x"] >= 0  # visible once focused
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")


def test_the_navigation_fits_a_phone_screen(page, live_server, alice):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(nav(page).get_by_role("link", name="Usage")).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    # The links wrap onto their own rows under the brand, side by side, not squeezed into a column.
    brand = nav(page).get_by_role("link", name="Modelport").bounding_box()
    models = nav(page).get_by_role("link", name="Models").bounding_box()
    upload = nav(page).get_by_role("link", name="Upload").bounding_box()
    assert models["y"] > brand["y"] + brand["height"]
    assert upload["y"] == models["y"] and upload["x"] > models["x"]
