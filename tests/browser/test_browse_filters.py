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


def test_without_javascript_the_search_button_applies_the_filters(chromium, live_web, alice, bob):
    builders.publish(owner=alice, name="alices-plus", data=builders.plus_one_onnx())
    builders.publish(owner=bob, name="bobs-plus", data=builders.plus_one_onnx())
    Model.objects.update(latest_format="onnx")
    context = chromium.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{live_web.url}/models/")
        page.get_by_label("Owner").fill("bob")
        page.get_by_label("Owner").press("Tab")
        assert "owner=bob" not in page.url  # nothing applies by itself without the script
        page.get_by_role("button", name="Search").click()
        expect(page).to_have_url(re.compile(r"owner=bob"))
        expect(page.locator(".model-tile", has_text="bobs-plus")).to_be_visible()
        expect(page.locator(".model-tile", has_text="alices-plus")).to_have_count(0)
    finally:
        context.close()


def test_on_a_phone_the_filters_leave_the_first_model_in_view(page, live_web, alice):
    builders.publish(owner=alice, name="alices-plus", data=builders.plus_one_onnx())
    Model.objects.update(latest_format="onnx")
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_web.url}/models/")
    tile = page.locator(".model-tile").first
    expect(tile).to_be_visible()
    box = tile.bounding_box()
    assert box["y"] < 844 - 100, box  # its name and first lines, not only its top edge
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    for name in ("Task", "Format", "Tag", "Owner", "Sort"):
        control = page.get_by_label(name).bounding_box()
        assert control["x"] >= 0 and control["x"] + control["width"] <= 390, (name, control)
