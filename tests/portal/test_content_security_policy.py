"""A strict Content-Security-Policy on every page, and pages that need nothing it forbids: no inline script,
no inline style, no event-handler attribute, nothing from another origin."""

from __future__ import annotations

import re

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

PUBLIC_PAGES = [
    "/",
    "/models/",
    "/models/alice/digits/",
    "/accounts/login/",
    "/accounts/signup/",
    "/accounts/password/reset/",
    "/accounts/password/reset/sent/",
    "/api/docs/",
    "/no-such-page/",
]
MEMBER_PAGES = ["/models/new/", "/settings/keys/", "/settings/usage/", "/accounts/password/"]
ADMIN_PAGES = ["/admin/", "/admin/axes/accessattempt/", "/admin/portal/apikey/"]


def directives(response) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {
        part.strip().split(" ", 1)[0]: part.strip().split(" ", 1)[1]
        for part in header.split(";")
        if part.strip()
    }


def inline_code(html: str) -> list[str]:
    """Whatever in the page the policy would refuse to run or apply."""
    found = []
    for match in re.finditer(r"<script\b([^>]*)>(.*?)</script>", html, re.S | re.I):
        attributes, body = match.groups()
        is_data = re.search(r'type="application/(ld\+)?json"', attributes)
        if "src=" not in attributes and not is_data and body.strip():
            found.append(f"inline script: {body.strip()[:80]}")
    found += [f"inline style block: {m[:80]}" for m in re.findall(r"<style\b[^>]*>(.*?)</style>", html, re.S)]
    found += [f"style attribute: {m}" for m in re.findall(r"<[^>]+\sstyle=\"([^\"]*)\"", html)]
    found += [f"event handler: {m}" for m in re.findall(r"<[^>]+\s(on[a-z]+)=", html)]
    found += [
        f"javascript: URL: {m}" for m in re.findall(r"(?:href|src|action)=\"(javascript:[^\"]*)\"", html)
    ]
    found += [f"other origin: {m}" for m in re.findall(r"(?:src|href)=\"(https?://[^\"]+)\"", html)]
    return found


def assert_strict(response, path: str) -> None:
    assert response.status_code in (200, 404), (path, response.status_code)
    for name, value in POLICY.items():
        assert directives(response)[name] == value, (path, name)
    assert inline_code(response.content.decode()) == [], path


@pytest.fixture
def catalog(version):
    return version


@pytest.mark.parametrize("path", PUBLIC_PAGES)
def test_public_pages_carry_the_policy_and_need_nothing_it_forbids(client, catalog, path):
    assert_strict(client.get(path), path)


@pytest.mark.parametrize("path", MEMBER_PAGES)
def test_member_pages_carry_the_policy_and_need_nothing_it_forbids(alice_client, catalog, path):
    assert_strict(alice_client.get(path), path)


@pytest.mark.parametrize("path", ADMIN_PAGES)
def test_admin_pages_carry_the_policy_and_need_nothing_it_forbids(client, django_user_model, path):
    client.force_login(django_user_model.objects.create_superuser("root", "root@example.com", "x" * 20))
    assert_strict(client.get(path), path)


def test_the_lockout_page_carries_the_policy(client, alice, settings):
    for n in range(settings.AXES_FAILURE_LIMIT):
        response = client.post("/accounts/login/", {"username": "alice", "password": f"wrong-{n}"})
    assert response.status_code == 429
    assert directives(response)["script-src"] == "'self'"
    assert inline_code(response.content.decode()) == []


def test_swagger_ui_starts_from_a_script_file(client):
    page = client.get("/api/docs/").content.decode()
    scripts = re.findall(r'<script src="([^"]+)"', page)
    assert any("swagger-ui-bundle.js" in src for src in scripts)
    start_up = next(src for src in scripts if "script" in src.split("?", 1)[-1])
    response = Client().get(start_up.replace("&amp;", "&"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle" in response.content.decode()


@pytest.mark.parametrize("path", ["/api/v1/models", "/v2/health/live", "/api/v1/no-such-thing"])
def test_json_apis_get_the_strictest_policy(client, path):
    response = client.get(path)
    assert response["Content-Type"].startswith("application/json")
    assert response["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
