"""The browse filters apply as they change, in Chromium against the real web: an owner typed, a task."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from marketplace.models import Model
from tests.inference import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_changed_filter_applies_without_the_search_button(page, live_web, alice, bob):
    digits = builders.digits_onnx()
    builders.publish(owner=alice, name="alices-digits", data=digits, task="image-classification")
    builders.publish(owner=bob, name="bobs-plus", data=builders.plus_one_onnx())
    Model.objects.update(latest_format="onnx")  # what publishing a ready version records
    page.goto(f"{live_web.url}/models/")
    alices = page.locator(".model-tile", has_text="alices-digits")
    bobs = page.locator(".model-tile", has_text="bobs-plus")
    expect(alices).to_be_visible()
    expect(bobs).to_be_visible()
    page.get_by_label("Owner").fill("bob")
    page.get_by_label("Owner").press("Tab")  # left changed: applied
    expect(page).to_have_url(re.compile(r"owner=bob"))
    expect(bobs).to_be_visible()
    expect(alices).to_have_count(0)
    page.get_by_label("Owner").fill("")
    page.get_by_label("Owner").press("Tab")
    expect(alices).to_be_visible()
    page.get_by_label("Task").select_option("image-classification")
    expect(page).to_have_url(re.compile(r"task=image-classification"))
    expect(alices).to_be_visible()
    expect(bobs).to_have_count(0)
    assert page.errors == []
