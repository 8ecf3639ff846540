"""The try-it widget on the real model page (Django's live server, no routing): what the page hands the widget
and what a visitor sees before running anything. Runs themselves are in test_e2e_journey.py."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from marketplace.demo import DIGITS_PREPROCESSING
from marketplace.models import Model, ModelVersion
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)


def publish(
    owner, name: str, *, task: str, signature: dict | None, labels=(), preprocessing=None, visibility="public"
) -> Model:
    model = Model.objects.create(
        owner=owner,
        name=name,
        task=task,
        labels=list(labels),
        preprocessing=preprocessing or {},
        visibility=visibility,
        latest_format="onnx" if signature else "",  # what publishing a ready version records
    )
    ModelVersion.objects.create(
        model=model,
        number=1,
        file=f"models/00/{name}",
        format="onnx",
        size=1,
        sha256="0" * 64,
        status=ModelVersion.Status.READY if signature else ModelVersion.Status.VALIDATING,
        signature=signature or {},
    )
    return model


@pytest.fixture
def digits(alice):
    signature = {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
    }
    return publish(
        alice,
        "digits",
        task="image-classification",
        signature=signature,
        labels=[str(n) for n in range(10)],
        preprocessing=DIGITS_PREPROCESSING,
    )


def log_in(page, username="alice"):
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_an_anonymous_visitor_is_asked_to_sign_in_and_comes_back_to_the_widget(page, live_server, digits):
    page.goto(f"{live_server.url}/models/alice/digits/")
    try_it = page.locator("#try-it")
    expect(try_it.get_by_role("heading", name="Try it")).to_be_visible()
    expect(try_it.locator("canvas")).to_have_count(0)
    try_it.get_by_role("link", name="Sign in to try this model").click()

    log_in(page)
    assert page.url == f"{live_server.url}/models/alice/digits/"
    canvas = try_it.locator("canvas.try-it-canvas")
    expect(canvas).to_be_visible()
    assert canvas.evaluate("c => [c.width, c.height]") == [280, 280]
    expect(try_it.get_by_text("Draw a digit (0–9)")).to_be_visible()
    expect(try_it.get_by_label("Or choose an image")).to_be_attached()
    expect(try_it.get_by_role("button", name="Run")).to_be_enabled()
    # The widget posts with the CSRF cookie the page set.
    assert "csrftoken=" in page.evaluate("document.cookie")
    assert page.errors == []


def test_a_tabular_model_page_gets_a_form_usable_by_keyboard(page, live_server, bob):
    signature = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    }
    publish(
        bob,
        "iris",
        task="tabular-classification",
        signature=signature,
        labels=["setosa", "versicolor", "virginica"],
        visibility="private",
    )
    page.goto(f"{live_server.url}/accounts/login/?next=/models/bob/iris/")
    log_in(page, "bob")

    try_it = page.locator("#try-it")
    fill = try_it.get_by_role("button", name="Fill with example")
    fill.focus()
    page.keyboard.press("Enter")
    for number in range(1, 5):
        page.keyboard.press("Tab")
        expect(try_it.get_by_label(f"Feature {number}")).to_be_focused()
        assert try_it.get_by_label(f"Feature {number}").input_value() != ""
    page.keyboard.press("Tab")
    expect(try_it.get_by_role("button", name="Run")).to_be_focused()


def test_a_model_without_a_ready_version_says_so(page, live_server, alice):
    publish(alice, "pending", task="other", signature=None)
    page.goto(f"{live_server.url}/accounts/login/?next=/models/alice/pending/")
    log_in(page)
    expect(page.locator("#try-it")).to_contain_text("no ready version yet")
    expect(page.locator("#try-it").get_by_role("button", name="Run")).to_have_count(0)


def test_the_widget_fits_a_phone_screen_on_the_model_page(page, live_server, digits):
    page.set_viewport_size({"width": 360, "height": 740})
    page.goto(f"{live_server.url}/accounts/login/?next=/models/alice/digits/")
    log_in(page)
    try_it = page.locator("#try-it")
    expect(try_it.locator("canvas")).to_be_visible()
    assert try_it.evaluate("s => s.scrollWidth <= s.clientWidth")
    # The whole page too: long code snippets scroll inside their box instead of widening the page.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    box = try_it.locator("canvas").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 360


WINE_FEATURES = [
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280/od315_of_diluted_wines",
    "proline",
]


@pytest.fixture
def wine(alice):
    """Shaped like the demo wine model: one [-1, 13] input whose columns the preprocessing names."""
    signature = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }
    return publish(
        alice,
        "wine",
        task="tabular-classification",
        signature=signature,
        labels=["class_0", "class_1", "class_2"],
        preprocessing={"features": WINE_FEATURES},
    )


def on_screen_and_uncovered(page, locator, height: int) -> None:
    """In the viewport as the page is (no scrolling), and the element a click there would reach."""
    box = locator.bounding_box()
    assert box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height, box
    centre = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    assert locator.evaluate("(node, [x, y]) => document.elementFromPoint(x, y) === node", list(centre))


@pytest.mark.parametrize("width, height", [(1280, 800), (390, 844)])
def test_a_tabular_models_run_button_is_in_view_as_the_page_opens(page, live_server, wine, width, height):
    page.set_viewport_size({"width": width, "height": height})
    page.goto(f"{live_server.url}/accounts/login/?next=/models/alice/wine/")
    log_in(page)
    try_it = page.locator("#try-it")
    expect(try_it.get_by_label("proline")).to_be_attached()
    assert page.evaluate("window.scrollY") == 0
    run = try_it.get_by_role("button", name="Run")
    on_screen_and_uncovered(page, run, height)
    # Its message is in view beside it too, though the field it names may be further down.
    run.click()
    message = try_it.locator(".try-it-message")
    expect(message).to_have_text("Fill in “alcohol” (or use Fill with example).")
    page.evaluate("window.scrollTo(0, 0)")
    on_screen_and_uncovered(page, message, height)
    # Long feature names wrap inside the card instead of widening the page.
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    label = try_it.get_by_text("od280/od315_of_diluted_wines").bounding_box()
    card = try_it.bounding_box()
    assert label["x"] + label["width"] <= card["x"] + card["width"], (label, card)
    assert page.errors == []
