"""Playwright fixtures: Debian's Chromium (never a downloaded one), a page per test, a screenshot on failure.

`page` is a blank page in its own context (cookies do not leak between tests). When a test fails, its page is
saved to `test-artifacts/<test name>.png` (the folder is gitignored) so the failure can be looked at.

Every page runs under the site's Content-Security-Policy, and a test whose page logged a CSP violation fails.

`widget_page` serves a throwaway model page holding the try-it section, with the real CSS and JS from
`static/`, from a made-up origin; calls to `/api/v1/` are answered by the test (Playwright routing). Those are
tests of the widget's JavaScript, not of the server: `test_e2e_journey.py` runs against the real processes.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from csp.utils import build_policy
from playwright.sync_api import Page, Route, sync_playwright

from tests.conftest import PROJECT_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
DEFAULT_TIMEOUT_MS = 15_000


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture(scope="module", autouse=True)
def allow_orm_calls_beside_playwright():
    # Sync Playwright parks its asyncio loop in this thread while the browser is open, so Django sees a
    # "running event loop" and would refuse the test's own ORM calls (fixtures, assertions on rows). Only for
    # these modules, while their browser is open: the rest of the suite keeps Django's check.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="module")
def chromium(allow_orm_calls_beside_playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run the suite with `make test`, which installs Debian's chromium."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def screenshot_path(nodeid: str) -> Path:
    return ARTIFACTS / (re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_") + ".png")


# Every page reports what the Content-Security-Policy blocked to the console, where the fixture collects it.
REPORT_CSP_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (event) => {
  console.error(`CSP violation: ${event.violatedDirective} blocked ${event.blockedURI || "inline code"}`
    + ` in ${event.sourceFile || event.documentURI}:${event.lineNumber}`);
});
"""


def is_csp_error(message) -> bool:
    text = message.text
    return message.type == "error" and ("CSP violation" in text or "Content Security Policy" in text)


@pytest.fixture
def page(chromium, request) -> Page:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    context.add_init_script(REPORT_CSP_VIOLATIONS)
    page = context.new_page()
    page.errors = []  # uncaught JavaScript errors, which tests assert are absent
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    csp_violations = []
    page.on("console", lambda message: csp_violations.append(message.text) if is_csp_error(message) else None)
    yield page
    call = getattr(request.node, "report_call", None)
    if call is not None and call.passed and csp_violations:
        pytest.fail("the Content-Security-Policy blocked something:\n" + "\n".join(csp_violations))
    if call is not None and call.failed:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            page.screenshot(path=str(screenshot_path(request.node.nodeid)), full_page=True)
        except Exception as error:  # noqa: BLE001 - a broken page must not hide the test's own failure
            print(f"could not save a screenshot: {error}")
    context.close()


# ---- the widget harness (routed, no server) ---------------------------------------------------------------

WIDGET_ORIGIN = "http://modelport.test"
STATIC_TYPES = {".css": "text/css", ".js": "application/javascript", ".svg": "image/svg+xml"}


FIXTURE_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{model} · Modelport</title>
<link rel="stylesheet" href="/static/css/modelport.css"></head><body>
<header class="site-header"><nav class="nav" aria-label="Main">
<a class="brand" href="/">Modelport</a>{account}</nav></header>
<main id="main" class="container"><h1>{model}</h1><section id="try-it" {section}></section></main>
<script src="/static/js/try-it.js"></script></body></html>"""


LOGOUT_FORM = '<form method="post" action="/accounts/logout/"><button type="submit">Log out</button></form>'


def as_attribute(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@dataclass
class ApiCall:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class WidgetPage:
    """A model page with a try-it section; `answer(method, path_regex, *responses)` scripts the API."""

    page: Page
    calls: list[ApiCall] = field(default_factory=list)
    answers: list[tuple[str, re.Pattern, list]] = field(default_factory=list)

    def answer(self, method: str, path: str, *responses: tuple[int, Any] | tuple[int, Any, dict]) -> None:
        """Answer `method path` (a regex on the path) with these responses in turn; the last one repeats."""
        self.answers.append((method, re.compile(path), list(responses)))

    def open(
        self,
        *,
        path: str = "/models/demo/digits/",
        csrf_cookie: str | None = "token-from-cookie",
        signed_in_navigation: bool = False,
        **attributes: Any,
    ) -> Page:
        section = " ".join(
            f'{name.replace("_", "-")}="{html.escape(as_attribute(value))}"'
            for name, value in attributes.items()
        )
        model = html.escape(attributes.get("data_model", ""))
        account = LOGOUT_FORM if signed_in_navigation else ""
        document = FIXTURE_PAGE.format(model=model, section=section, account=account)
        self.page.route(f"{WIDGET_ORIGIN}/**", lambda route: self._serve(route, path, document))
        if csrf_cookie:
            self.page.context.add_cookies([{"name": "csrftoken", "value": csrf_cookie, "url": WIDGET_ORIGIN}])
        self.page.goto(WIDGET_ORIGIN + path)
        return self.page

    def _serve(self, route: Route, page_path: str, document: str) -> None:
        request = route.request
        path = request.url[len(WIDGET_ORIGIN) :]
        if path.startswith("/api/"):
            body = request.post_data
            payload = json.loads(body) if body else None
            self.calls.append(ApiCall(request.method, path, request.headers, payload))
            for method, pattern, responses in self.answers:
                if method == request.method and pattern.search(path):
                    status, payload, *rest = responses.pop(0) if len(responses) > 1 else responses[0]
                    route.fulfill(
                        status=status,
                        content_type="application/json",
                        body=json.dumps(payload),
                        headers=rest[0] if rest else None,
                    )
                    return
            route.fulfill(status=599, content_type="application/json", body='{"detail": "not scripted"}')
        elif path.startswith("/static/"):
            file = PROJECT_ROOT / path.split("?")[0].lstrip("/")
            route.fulfill(status=200, body=file.read_bytes(), content_type=STATIC_TYPES.get(file.suffix, ""))
        elif path == page_path:
            # The same policy the site sends, so the widget's code is held to it here too.
            route.fulfill(
                status=200,
                content_type="text/html; charset=utf-8",
                body=document,
                headers={"Content-Security-Policy": build_policy()},
            )
        else:
            route.fulfill(status=404, content_type="text/html", body="<h1>Not found</h1>")


@pytest.fixture
def widget_page(page) -> WidgetPage:
    return WidgetPage(page)
