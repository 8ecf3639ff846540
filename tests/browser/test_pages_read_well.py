"""Pages as a person reads them, in Chromium against the real Django server: the usage page's reset times
and chart axis, and the versions table's status words."""

from __future__ import annotations

import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from marketplace.models import Model, ModelVersion
from portal.models import UsageDay

pytestmark = pytest.mark.django_db(transaction=True)


def log_in(page, client, live_server, user) -> None:
    client.force_login(user)
    cookie = client.cookies["sessionid"]
    page.context.add_cookies([{"name": "sessionid", "value": cookie.value, "url": live_server.url}])


def version(model: Model, number: int, status: str, reason: str = "") -> ModelVersion:
    sha = f"{number:02d}" * 32
    return ModelVersion.objects.create(
        model=model,
        number=number,
        file=f"models/{sha[:2]}/{sha}",
        format="onnx" if status == "ready" else "",
        size=1000 * number,
        sha256=sha,
        status=status,
        reason=reason,
    )


@pytest.fixture
def tiny(alice) -> Model:
    model = Model.objects.create(owner=alice, name="tiny", latest_format="onnx")
    version(model, 1, "ready")
    version(model, 2, "validating")
    version(model, 3, "rejected", "The file is not a valid ONNX model: truncated protobuf.")
    return model


def test_the_usage_page_says_when_limits_reset_in_hours_and_minutes(page, client, live_server, alice, tiny):
    UsageDay.objects.create(
        user=alice, version=tiny.versions.get(number=1), day=timezone.now().date(), requests=1, succeeded=1
    )
    log_in(page, client, live_server, alice)
    page.goto(live_server.url + "/settings/usage/")

    resets = page.locator(".resets-in")
    expect(resets).to_have_count(2)
    minute, day = resets.all_inner_texts()
    assert re.fullmatch(r"(\d{1,2} s|1 min)", minute), minute
    assert re.fullmatch(r"(\d{1,2} h \d{1,2} min|\d{1,2} min( \d{1,2} s)?|\d{1,2} s)", day), day
    assert not re.search(r"resets in \d{3,} s", page.locator(".usage-meters").inner_text())

    chart = page.get_by_role("img", name="Requests per day by model")
    ticks = chart.locator("text.chart-axis[text-anchor='end']").all_text_contents()
    assert ticks == ["0", "1"]
    assert chart.locator("rect title").first.text_content().startswith("tiny: 1 on ")


def test_the_versions_table_shows_each_versions_status_word(page, client, live_server, alice, tiny):
    log_in(page, client, live_server, alice)
    page.goto(live_server.url + "/models/alice/tiny/")

    rows = page.locator(".versions-table tr.version-row")
    expect(rows).to_have_count(3)
    expect(rows.nth(0).locator(".version-status")).to_have_text(
        "rejected The file is not a valid ONNX model: truncated protobuf."
    )
    expect(rows.nth(1).locator(".version-status")).to_have_text("validating")
    expect(rows.nth(2).locator(".version-status")).to_have_text("ready")
    downloads = page.locator(".versions-table").get_by_role("link", name="Download")
    expect(downloads).to_have_count(1)
    expect(
        page.locator("tr.version-extra[data-version='1']").get_by_role("link", name="Download")
    ).to_have_attribute("href", "/api/v1/models/alice/tiny/versions/1/file")


def test_a_visitor_sees_only_the_ready_versions(page, live_server, tiny):
    page.goto(live_server.url + "/models/alice/tiny/")
    rows = page.locator(".versions-table tr.version-row")
    expect(rows).to_have_count(1)
    expect(rows.locator(".version-status")).to_have_text("ready")


@pytest.mark.parametrize(
    "path", ["/", "/models/", "/models/alice/tiny/", "/settings/keys/", "/settings/usage/"]
)
def test_nothing_runs_off_a_phones_screen(page, client, live_server, alice, tiny, path):
    from portal.models import ApiKey

    for name in ("a key with a rather long name", "another"):
        ApiKey.issue(user=alice, name=name, scopes=["read", "predict", "upload"])
    log_in(page, client, live_server, alice)
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(live_server.url + path)
    # The page is no wider than the screen: wide tables scroll inside their card.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
