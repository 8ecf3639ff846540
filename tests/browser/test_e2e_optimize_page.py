"""The model page's Optimize button, in Chromium against the live server and worker: the owner presses it, the
page follows the new version while the worker makes it, then shows what was measured."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from playwright.sync_api import expect

from marketplace import services
from marketplace.models import ModelVersion
from tests.conftest import PASSWORD
from tests.marketplace.optimize_models import digits_example, trained_mlp

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SETTLE_TIMEOUT_MS = 120_000


def test_the_owner_optimizes_a_version_and_the_page_follows_it(page, live_web, celery_worker_process, alice):
    content, _ = trained_mlp()
    stored = services.store_upload(file=ContentFile(content, name="mlp.onnx"), limit=1 << 30)
    version = services.model_create(
        owner=alice,
        name="mlp",
        stored=stored,
        task="tabular-classification",
        labels=[str(digit) for digit in range(10)],
        example=digits_example(),
    )
    assert services.version_publish(version=version, inline=True).status == ModelVersion.Status.READY

    page.goto(live_web.url + "/accounts/login/?next=/models/alice/mlp/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    row = page.locator(".version-extra[data-version='1']")
    row.get_by_label("Method").select_option("dynamic-int8")
    row.get_by_role("button", name="Optimize").click()

    started = "Version 2 is being made from version 1 (dynamic-int8)"
    expect(page.locator(".messages")).to_contain_text(started)
    # No reload by the test: the page polls the new version and reloads itself once it is ready.
    extra = page.locator(".version-extra[data-version='2']")
    expect(extra).to_contain_text("Optimized from v1 (dynamic-int8)", timeout=SETTLE_TIMEOUT_MS)
    expect(extra.locator(".optimization-summary")).to_contain_text("smaller", timeout=SETTLE_TIMEOUT_MS)
    expect(extra.locator(".optimization-summary")).to_contain_text("top label unchanged on")
    expect(page.locator(".version-row[data-version='2'] .badge")).to_have_text("ready")
    assert page.errors == []
