"""The upload form as a person fills it in, in Chromium against the real web and worker: essentials first, the
advanced fields folded, and a form that comes back with a problem says plainly that the file must be chosen
again (browsers drop a chosen file), then uploads once it is."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.inference import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def log_in(page, client, base: str, user) -> None:
    client.force_login(user)
    page.context.add_cookies([{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": base}])


def test_a_form_back_with_a_problem_asks_for_the_file_again_and_uploads_once_it_is_chosen(
    page, client, live_web, celery_worker_process, alice
):
    base = live_web.url
    model_file = {
        "name": "plus.onnx",
        "mimeType": "application/octet-stream",
        "buffer": builders.plus_one_onnx(),
    }
    log_in(page, client, base, alice)
    page.goto(base + "/models/new/")

    # Essentials in view with their help; the expert fields folded until asked for.
    expect(page.get_by_text("the model's address is your-name/this-name")).to_be_visible()
    signature = page.get_by_label("Signature")
    expect(signature).to_be_hidden()
    expect(page.locator(".file-again, .file-again-here")).to_have_count(0)

    page.get_by_label("Name").fill("plus")
    page.get_by_label("File", exact=True).set_input_files(files=[model_file])
    page.get_by_text("Advanced: preprocessing, signature").click()
    signature.fill("{not json")
    page.get_by_role("button", name="Upload", exact=True).click()

    # Back with the problem: the advanced section open on it, what was typed kept, the file asked for again.
    expect(page.locator(".file-again")).to_contain_text("Choose the model file again")
    expect(page.locator(".file-again").get_by_role("link", name="Signature")).to_be_visible()
    expect(page.locator(".file-again-here")).to_be_visible()
    expect(page.get_by_label("Signature")).to_be_visible()
    expect(page.get_by_label("Name")).to_have_value("plus")
    assert page.get_by_label("File", exact=True).evaluate("input => input.files.length") == 0

    page.get_by_label("Signature").fill("")
    page.get_by_label("File", exact=True).set_input_files(files=[model_file])
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_url(re.compile(r"/models/alice/plus/$"), timeout=60_000)
    assert page.errors == []
