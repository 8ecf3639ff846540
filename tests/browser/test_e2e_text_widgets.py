"""The text widgets on the demo text models, in Chromium against the real processes: the sentence-similarity
widget of all-MiniLM-L6-v2 and the topic classifier's text box, both prefilled from the version's example."""

from __future__ import annotations

import re

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from tests.conftest import PASSWORD

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT_MS = 60_000


def log_in(page, base: str) -> None:
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("form[action$='/accounts/logout/']")).to_be_attached()


def test_the_similarity_widget_and_the_topic_text_box(page, alice, live_web, celery_worker_process):
    call_command("seed_demo")
    base = live_web.url
    log_in(page, base)

    page.goto(base + "/models/demo/minilm-embeddings/")
    try_it = page.locator("#try-it")
    source = try_it.get_by_label("Source sentence")
    expect(source).to_have_value("A man is eating food.")
    others = try_it.get_by_label("Sentences to compare to")
    expect(others).to_have_value(re.compile(r"^A man is eating a piece of bread\.\n"))
    others.fill("The stock market fell sharply today.\nA man is eating a piece of bread.")
    try_it.get_by_role("button", name="Run").click()
    rows = try_it.locator(".try-it-similarity-row")
    expect(rows).to_have_count(2, timeout=RUN_TIMEOUT_MS)
    expect(rows.nth(0)).to_contain_text("The stock market fell sharply today.")
    far, near = (float(text) for text in try_it.locator(".try-it-similarity-score").all_inner_texts())
    assert near > far + 0.4, (near, far)

    page.goto(base + "/models/demo/topics/")
    text = try_it.get_by_label("Text", exact=True)
    expect(text).to_have_value("The goalkeeper saved a penalty in the last minute.")
    try_it.get_by_role("button", name="Run").click()
    expect(try_it.locator(".try-it-label")).to_have_text("sports", timeout=RUN_TIMEOUT_MS)
    text.fill("Heavy snow and icy winds are forecast for tonight.")
    try_it.get_by_role("button", name="Run").click()
    expect(try_it.locator(".try-it-label")).to_have_text("weather", timeout=RUN_TIMEOUT_MS)
    expect(try_it.locator(".try-it-bar")).to_have_count(5)
    assert page.errors == []
