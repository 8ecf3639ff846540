"""Chromium under the site's Content-Security-Policy: the pages and Swagger UI work and log no violation (the
`page` fixture fails any test whose page did), a forgotten password is reset end to end, and a lock-out
shows its page."""

from __future__ import annotations

import re

import pytest
from csp.utils import build_policy
from django.core import mail
from playwright.sync_api import expect

from tests.conftest import PASSWORD

from .conftest import REPORT_CSP_VIOLATIONS, is_csp_error

pytestmark = pytest.mark.django_db(transaction=True)

NEW_PASSWORD = "a-brand-new-and-long-passphrase"


def log_in(page, base_url: str, password: str = PASSWORD):
    page.goto(base_url + "/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_the_watch_sees_what_the_policy_blocks(chromium):
    # The guard the other tests rely on: an inline script under the policy is reported, and does not run.
    context = chromium.new_context()
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    page = context.new_page()
    seen = []
    page.on("console", lambda message: seen.append(message) if is_csp_error(message) else None)
    document = "<!doctype html><title>t</title><p id=p>before</p><script>p.textContent='ran'</script>"
    page.route(
        "http://csp.test/",
        lambda route: route.fulfill(
            status=200,
            content_type="text/html",
            body=document,
            headers={"Content-Security-Policy": build_policy()},
        ),
    )
    page.goto("http://csp.test/")
    expect(page.locator("#p")).to_have_text("before")
    page.wait_for_timeout(200)  # the violation event is dispatched after the parser moves on
    assert any("script-src" in message.text for message in seen), [m.text for m in seen]
    context.close()


def test_swagger_ui_renders_the_api_under_the_policy(page, live_server):
    page.goto(live_server.url + "/api/docs/")
    expect(page.get_by_role("heading", name=re.compile("Modelport API"))).to_be_visible()
    expect(page.get_by_text("/api/v1/models", exact=True).first).to_be_visible()
    # "Try it out" calls the API from the page (connect-src 'self').
    operation = page.locator(
        ".opblock-get", has=page.locator(".opblock-summary-path[data-path='/api/v1/models']")
    ).first
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    expect(operation.locator(".live-responses-table tr.response .response-col_status").first).to_have_text(
        "200"
    )
    assert page.errors == []


def test_the_site_pages_work_under_the_policy(page, live_server, alice):
    log_in(page, live_server.url)
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("alice")
    for path, heading in [
        ("/", None),
        ("/models/", None),
        ("/models/new/", None),
        ("/settings/keys/", "API keys"),
        ("/settings/usage/", None),
        ("/accounts/password/", "Change password"),
    ]:
        response = page.goto(live_server.url + path)
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        if heading:
            expect(page.get_by_role("heading", name=heading).first).to_be_visible()
    assert page.errors == []


def test_a_forgotten_password_is_reset_end_to_end(page, live_server, alice):
    page.goto(live_server.url + "/accounts/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    expect(page.get_by_role("heading", name="Reset your password")).to_be_visible()
    page.get_by_label("Email").fill("alice@example.com")
    page.get_by_role("button", name="Send the link").click()
    expect(page.get_by_role("heading", name="Check your mail")).to_be_visible()

    assert len(mail.outbox) == 1
    link = re.search(r"https?://\S+/accounts/password/reset/\S+/", mail.outbox[0].body).group(0)
    page.goto(link)
    expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    page.get_by_label("New password", exact=True).fill(NEW_PASSWORD)
    page.get_by_label("New password confirmation").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set the password").click()
    expect(page.get_by_role("heading", name="Password set")).to_be_visible()

    page.get_by_role("main").get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("navigation", name="Main")).to_contain_text("alice")
    assert page.errors == []


def test_a_locked_out_login_shows_until_when(page, live_server, alice, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        log_in(page, live_server.url, password=f"wrong-{n}")
    expect(page.get_by_role("heading", name="Too many failed logins")).to_be_visible()
    expect(page.get_by_role("main")).to_contain_text("Try again after")
    log_in(page, live_server.url)
    expect(page.get_by_role("heading", name="Too many failed logins")).to_be_visible()
    expect(page.get_by_role("navigation", name="Main")).not_to_contain_text("alice")
