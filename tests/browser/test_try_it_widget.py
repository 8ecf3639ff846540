"""Widget tests of static/js/try-it.js: a throwaway model page, the API answered by Playwright routing.

These test the JavaScript (what it builds from the signature, what it sends, how it shows answers), not the
server; the same widget runs against the real processes in test_e2e_journey.py.
"""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image
from playwright.sync_api import expect

from marketplace.demo import DIGITS_PREPROCESSING

DIGITS = {
    "data_model": "demo/digits",
    "data_task": "image-classification",
    "data_signature": {
        "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    },
    "data_labels": [str(n) for n in range(10)],
    "data_preprocessing": DIGITS_PREPROCESSING,
    "data_authenticated": "true",
    "data_login_url": "/accounts/login/?next=/models/demo/digits/",
}
IRIS = {
    "data_model": "demo/iris",
    "data_task": "tabular-classification",
    "data_signature": {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
        ],
    },
    "data_labels": ["setosa", "versicolor", "virginica"],
    "data_authenticated": "true",
}
OTHER = {
    "data_model": "alice/embedder",
    "data_task": "feature-extraction",
    "data_signature": {
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "ids", "datatype": "INT64", "shape": [2, -1, 2]},
        ],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
    },
    "data_authenticated": "true",
}
PREDICT = r"^/api/v1/models/demo/digits/predict"
DIGIT_RESULT = {
    "id": "0b7c4a3e-5d7e-4c55-9d38-1f9b2b1f6a10",
    "model": "demo/digits",
    "version": 3,
    "status": "succeeded",
    "outputs": [
        {
            "name": "probabilities",
            "datatype": "FP32",
            "shape": [1, 10],
            "data": [0.01, 0.9, 0.02, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01, 0.01],
        }
    ],
    "top": [{"label": "1", "score": 0.9}, {"label": "2", "score": 0.02}, {"label": "0", "score": 0.01}],
    "latency_ms": 3.4,
}


def png_bytes(color: int = 0, size: int = 8) -> bytes:
    image = Image.new("L", (size, size), 255)
    for y in range(size):
        image.putpixel((size // 2, y), color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def draw_vertical_stroke(page, canvas="canvas.try-it-canvas"):
    box = page.locator(canvas).bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(x, box["y"] + box["height"] * (0.15 + 0.07 * step))
    page.mouse.up()


def test_the_digits_model_gets_a_large_canvas_and_sends_the_drawing_as_a_png(widget_page):
    widget_page.answer("POST", PREDICT, (200, DIGIT_RESULT))
    page = widget_page.open(**DIGITS)

    canvas = page.locator("canvas.try-it-canvas")
    expect(canvas).to_be_visible()
    assert canvas.evaluate("c => [c.width, c.height]") == [280, 280]
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()

    expect(page.locator(".try-it-label")).to_have_text("1")
    [call] = widget_page.calls
    assert call.method == "POST"
    assert call.path.startswith("/api/v1/models/demo/digits/predict")
    assert call.headers["x-csrftoken"] == "token-from-cookie"
    assert call.headers["content-type"] == "application/json"
    assert set(call.body) == {"image"}
    drawing = Image.open(io.BytesIO(base64.b64decode(call.body["image"]))).convert("L")
    assert drawing.format is None or drawing.format == "PNG"
    width, height = drawing.size
    # Cropped around the ink: a tall thin stroke centred in a square of white paper, black ink in the middle.
    assert width == height
    assert drawing.getpixel((width // 2, height // 2)) < 60
    assert drawing.getpixel((2, height // 2)) == 255
    assert page.errors == []


def test_the_result_is_a_bar_chart_of_the_top_labels_with_latency_and_version(widget_page):
    widget_page.answer("POST", PREDICT, (200, DIGIT_RESULT))
    page = widget_page.open(**DIGITS)
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()

    bars = page.locator(".try-it-bar")
    expect(bars).to_have_count(3)
    expect(bars.nth(0)).to_contain_text("1")
    expect(bars.nth(0)).to_contain_text("90.0%")
    expect(bars.nth(1)).to_contain_text("2")
    best = bars.nth(0).locator(".try-it-bar-fill").evaluate("e => e.getBoundingClientRect().width")
    second = bars.nth(1).locator(".try-it-bar-fill").evaluate("e => e.getBoundingClientRect().width")
    assert best > 20 * second > 0
    expect(page.locator(".try-it-result")).to_contain_text("version 3")
    expect(page.locator(".try-it-result")).to_contain_text("3.4 ms")
    assert page.locator(".try-it-result").get_attribute("aria-live") == "polite"
    expect(page.locator(".try-it-raw pre")).to_be_hidden()  # folded under the chart
    page.get_by_text("Raw JSON").click()
    expect(page.locator(".try-it-raw pre")).to_contain_text('"latency_ms": 3.4')
    expect(page.locator(".try-it-status")).to_have_text("Done")


def test_an_image_chosen_with_the_file_picker_is_previewed_and_sent_as_is(widget_page):
    widget_page.answer("POST", PREDICT, (200, DIGIT_RESULT))
    page = widget_page.open(**DIGITS)
    image = png_bytes()

    page.get_by_label("Or choose an image").set_input_files(
        files=[{"name": "seven.png", "mimeType": "image/png", "buffer": image}]
    )
    expect(page.locator("img.try-it-preview")).to_be_visible()
    assert page.get_by_label("Or choose an image").evaluate("input => input.files[0].name") == "seven.png"
    page.get_by_role("button", name="Run").click()

    expect(page.locator(".try-it-label")).to_have_text("1")
    assert base64.b64decode(widget_page.calls[0].body["image"]) == image


def test_an_image_dropped_on_the_drop_zone_is_used(widget_page):
    widget_page.answer("POST", PREDICT, (200, DIGIT_RESULT))
    page = widget_page.open(**DIGITS)
    image = png_bytes(color=40)
    data_transfer = page.evaluate_handle(
        """bytes => { const dt = new DataTransfer();
                      dt.items.add(new File([new Uint8Array(bytes)], "drop.png", {type: "image/png"}));
                      return dt; }""",
        list(image),
    )
    page.locator(".try-it-drop").dispatch_event("drop", {"dataTransfer": data_transfer})
    expect(page.locator("img.try-it-preview")).to_be_visible()
    assert page.get_by_label("Or choose an image").evaluate("input => input.files[0].name") == "drop.png"
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".try-it-label")).to_have_text("1")
    assert base64.b64decode(widget_page.calls[0].body["image"]) == image


def test_the_last_input_wins_and_the_other_is_cleared(widget_page):
    widget_page.answer("POST", PREDICT, (200, DIGIT_RESULT))
    page = widget_page.open(**DIGITS)
    canvas = page.locator("canvas.try-it-canvas")
    ink = "c => Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data).some(v => v < 200)"
    draw_vertical_stroke(page)
    assert canvas.evaluate(ink)

    picker = page.get_by_label("Or choose an image")
    picker.set_input_files(files=[{"name": "a.png", "mimeType": "image/png", "buffer": png_bytes()}])
    expect(page.locator("img.try-it-preview")).to_be_visible()
    expect(page.locator(".try-it-source")).to_have_text("The model will read the chosen image.")
    assert not canvas.evaluate(ink)  # the drawing went when the file came

    draw_vertical_stroke(page)
    expect(page.locator("img.try-it-preview")).to_be_hidden()
    expect(page.locator(".try-it-source")).to_have_text("The model will read your drawing.")
    assert picker.evaluate("input => input.files.length") == 0
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".try-it-label")).to_have_text("1")
    sent = Image.open(io.BytesIO(base64.b64decode(widget_page.calls[0].body["image"])))
    assert sent.size[0] > 100  # the cropped drawing, not the 8x8 file


def test_running_with_nothing_drawn_asks_for_a_drawing_and_sends_nothing(widget_page):
    page = widget_page.open(**DIGITS)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_have_text("Draw something or choose an image first.")
    page.get_by_role("button", name="Clear drawing").click()
    assert widget_page.calls == []


def test_a_large_colour_image_model_gets_a_file_picker_but_no_canvas(widget_page):
    attributes = dict(
        DIGITS,
        data_model="alice/resnet",
        data_preprocessing={"width": 224, "height": 224, "mode": "RGB", "layout": "NCHW"},
    )
    page = widget_page.open(**attributes)
    expect(page.get_by_label("Choose an image")).to_be_attached()
    expect(page.locator("canvas")).to_have_count(0)


def test_a_tabular_model_gets_one_labelled_field_per_feature_and_an_example(widget_page):
    result = {
        "id": "x",
        "model": "demo/iris",
        "version": 1,
        "status": "succeeded",
        "latency_ms": 1.2,
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}],
        "top": [{"label": "setosa", "score": 0.97}, {"label": "versicolor", "score": 0.03}],
    }
    widget_page.answer("POST", r"^/api/v1/models/demo/iris/predict", (200, result))
    page = widget_page.open(
        **IRIS,
        data_preprocessing={
            "features": ["sepal length", "sepal width", "petal length", "petal width"],
            "example": [5.1, 3.5, 1.4, 0.2],
        },
    )

    for name in ["sepal length", "sepal width", "petal length", "petal width"]:
        expect(page.get_by_label(name)).to_have_value("")
    page.get_by_role("button", name="Fill with example").click()
    expect(page.get_by_label("sepal length")).to_have_value("5.1")
    page.get_by_label("petal width").fill("0.3")
    page.get_by_role("button", name="Run").click()

    expect(page.locator(".try-it-label")).to_have_text("setosa")
    assert widget_page.calls[0].body == {"inputs": {"features": [[5.1, 3.5, 1.4, 0.3]]}}


def test_the_answer_below_a_long_form_is_brought_into_view(widget_page):
    """On a phone the answer comes below the fields: after a run it is scrolled to, not left off screen."""
    result = {
        "id": "w",
        "model": "demo/wine",
        "version": 1,
        "status": "succeeded",
        "latency_ms": 1.0,
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [1], "data": [0]}],
        "top": [{"label": "class_0", "score": 0.9}],
    }
    widget_page.answer("POST", r"^/api/v1/models/demo/wine/predict", (200, result))
    widget_page.page.set_viewport_size({"width": 390, "height": 844})
    signature = {
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 13]}],
        "outputs": [{"name": "label", "datatype": "INT64", "shape": [-1]}],
    }
    page = widget_page.open(
        path="/models/demo/wine/",
        data_model="demo/wine",
        data_task="tabular-classification",
        data_signature=signature,
        data_labels=["class_0", "class_1", "class_2"],
        data_authenticated="true",
    )
    page.get_by_role("button", name="Fill with example").click()
    page.get_by_role("button", name="Run").click()
    label = page.locator(".try-it-label")
    expect(label).to_have_text("class_0")
    expect(label).to_be_in_viewport()


def test_a_tabular_model_without_feature_names_still_gets_a_form_and_an_example(widget_page):
    widget_page.answer("POST", r"^/api/v1/models/demo/iris/predict", (400, {"detail": "unused"}))
    page = widget_page.open(**IRIS)
    expect(page.locator(".try-it-fields input")).to_have_count(4)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("Fill in “Feature 1”")
    assert widget_page.calls == []
    page.get_by_role("button", name="Fill with example").click()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("could not take this input: unused")
    values = widget_page.calls[0].body["inputs"]["features"]
    assert len(values) == 1 and len(values[0]) == 4 and all(isinstance(v, float | int) for v in values[0])


def test_a_tabular_model_with_one_input_per_column_names_fields_after_the_inputs(widget_page):
    signature = {
        "inputs": [
            {"name": "age", "datatype": "INT64", "shape": [-1, 1]},
            {"name": "income", "datatype": "FP32", "shape": [-1, 1]},
        ],
        "outputs": [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}],
    }
    result = {
        "id": "r",
        "model": "demo/iris",
        "version": 2,
        "status": "succeeded",
        "latency_ms": 0.8,
        "outputs": [{"name": "variable", "datatype": "FP32", "shape": [1, 1], "data": [41.5]}],
    }
    widget_page.answer("POST", r"^/api/v1/models/demo/iris/predict", (200, result))
    page = widget_page.open(**dict(IRIS, data_task="tabular-regression", data_signature=signature))
    page.get_by_label("age").fill("42")
    page.get_by_label("income").fill("1234.5")
    page.get_by_role("button", name="Run").click()
    expect(page.locator("table.try-it-outputs")).to_contain_text("41.5")
    assert widget_page.calls[0].body == {"inputs": {"age": [[42]], "income": [[1234.5]]}}


def test_any_other_model_gets_a_json_editor_per_input_prefilled_from_the_signature(widget_page):
    result = {
        "id": "e",
        "model": "alice/embedder",
        "version": 1,
        "status": "succeeded",
        "latency_ms": 12.0,
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.25, -1.5]}],
    }
    widget_page.answer("POST", r"^/api/v1/models/alice/embedder/predict", (200, result))
    page = widget_page.open(path="/models/alice/embedder/", **OTHER)

    x = page.get_by_label("x", exact=True)
    ids = page.get_by_label("ids", exact=True)
    assert page.evaluate("t => JSON.parse(t)", x.input_value()) == [[0.5, 0.5, 0.5]]
    assert page.evaluate("t => JSON.parse(t)", ids.input_value()) == [[[0, 0]], [[0, 0]]]
    expect(page.locator(".try-it-json")).to_contain_text("INT64, shape [2, ?, 2]")
    x.fill("[[1, 2, 3]]")
    page.get_by_role("button", name="Run").click()

    table = page.locator("table.try-it-outputs")
    expect(table).to_contain_text("y")
    expect(table).to_contain_text("[1, 2]")
    expect(table).to_contain_text("0.25, -1.5")
    expect(page.locator(".try-it-bars")).to_have_count(0)
    expect(page.locator(".try-it-raw pre")).to_be_visible()  # open: without a chart it is the answer
    expect(page.locator(".try-it-raw pre")).to_contain_text('"data": [0.25, -1.5]')
    expect(page.locator(".try-it-result")).to_contain_text("12 ms")
    assert widget_page.calls[0].body == {"inputs": {"x": [[1, 2, 3]], "ids": [[[0, 0]], [[0, 0]]]}}


def test_invalid_json_names_the_input_and_sends_nothing(widget_page):
    page = widget_page.open(path="/models/alice/embedder/", **OTHER)
    page.get_by_label("ids", exact=True).fill("[[1, 2")
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("“ids” is not valid JSON")
    expect(page.get_by_label("ids", exact=True)).to_be_focused()
    assert widget_page.calls == []


def test_a_long_prediction_shows_its_status_live_until_done(widget_page):
    prediction = "/api/v1/predictions/0b7c4a3e-5d7e-4c55-9d38-1f9b2b1f6a10"
    widget_page.answer(
        "POST",
        PREDICT,
        (202, {"id": DIGIT_RESULT["id"], "status": "queued", "url": "http://modelport.test" + prediction}),
    )
    # A prediction record has outputs but no `top`: the widget ranks the labels itself (logits -> softmax).
    logits = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 0.0, 2.0]
    record = {
        "id": DIGIT_RESULT["id"],
        "model": "demo/digits",
        "version": 3,
        "status": "succeeded",
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": logits}],
        "latency_ms": 2400.0,
        "queue_ms": 2000,
        "compute_ms": 400,
    }
    widget_page.answer(
        "GET",
        "^" + prediction + "$",
        (200, {"id": record["id"], "status": "queued"}),
        (200, {"id": record["id"], "status": "running"}),
        (200, {"id": record["id"], "status": "running"}),
        (200, record),
    )
    page = widget_page.open(**DIGITS)
    seen = []
    page.expose_function("recordStatus", lambda text: seen.append(text))
    page.evaluate("""() => new MutationObserver(() => {
        window.recordStatus(document.querySelector('.try-it-status').textContent);
    }).observe(document.querySelector('.try-it-status'), {childList: true, subtree: true})""")
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()

    expect(page.locator(".try-it-label")).to_have_text("7")
    expect(page.locator(".try-it-bar-label")).to_have_text(["7", "9", "1", "0", "2"])
    expect(page.locator(".try-it-bar-score")).to_have_text(["95.9%", "1.8%", "0.6%", "0.2%", "0.2%"])
    expect(page.locator(".try-it-result")).to_contain_text("2400 ms")
    expect(page.locator(".try-it-status")).to_have_text("Done")
    statuses = [text for text in dict.fromkeys(seen) if text]
    assert statuses == ["Running…", "Queued", "Running", "Done"]
    polls = [call for call in widget_page.calls if call.method == "GET"]
    assert len(polls) == 4 and all(call.path == prediction for call in polls)
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()


def test_a_failed_long_prediction_says_why(widget_page):
    widget_page.answer(
        "POST", PREDICT, (202, {"id": "abc", "status": "queued", "url": "/api/v1/predictions/abc"})
    )
    widget_page.answer(
        "GET",
        r"^/api/v1/predictions/abc$",
        (200, {"id": "abc", "status": "failed", "error": "the worker ran out of time"}),
    )
    page = widget_page.open(**DIGITS)
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_have_text("The prediction failed: the worker ran out of time")
    expect(page.locator(".try-it-status")).to_have_text("Failed")
    expect(page.get_by_role("button", name="Run")).to_be_enabled()


def test_a_run_that_failed_on_the_worker_says_why(widget_page):
    failed = {
        "id": "f",
        "model": "demo/digits",
        "version": 3,
        "status": "failed",
        "latency_ms": 5.0,
        "error": "the model raised: index out of range",
    }
    widget_page.answer("POST", PREDICT, (200, failed))
    page = widget_page.open(**DIGITS)
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_have_text(
        "The prediction failed: the model raised: index out of range"
    )
    expect(page.locator(".try-it-status")).to_have_text("Failed")
    expect(page.locator(".try-it-result")).to_be_empty()


def test_a_long_prediction_can_be_canceled(widget_page):
    widget_page.answer(
        "POST", PREDICT, (202, {"id": "abc", "status": "queued", "url": "/api/v1/predictions/abc"})
    )
    widget_page.answer("GET", r"^/api/v1/predictions/abc$", (200, {"id": "abc", "status": "running"}))
    widget_page.answer(
        "POST", r"^/api/v1/predictions/abc/cancel$", (200, {"id": "abc", "status": "canceled"})
    )
    page = widget_page.open(**DIGITS)
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".try-it-status")).to_have_text("Running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".try-it-status")).to_have_text("Canceled")
    assert widget_page.calls[-1].path == "/api/v1/predictions/abc/cancel"
    assert widget_page.calls[-1].headers["x-csrftoken"] == "token-from-cookie"


@pytest.mark.parametrize(
    ("status", "body", "headers", "words"),
    [
        (
            400,
            {"detail": "Input 'pixels' expects shape [-1, 64], got [1, 63]."},
            None,
            "The model could not take this input: Input 'pixels' expects shape [-1, 64], got [1, 63].",
        ),
        (
            400,
            {"inputs": ["Unknown input 'x'."]},
            None,
            "The model could not take this input: Unknown input 'x'.",
        ),
        (
            400,
            {"wait": ["Must be between 0 and 60 seconds."]},
            None,
            "The model could not take this input: wait: Must be between 0 and 60 seconds.",
        ),
        (
            415,
            {"detail": "The image could not be decoded."},
            None,
            "This file type is not supported: The image could not be decoded.",
        ),
        (
            429,
            {"detail": "Daily request quota exhausted."},
            {"Retry-After": "30"},
            "You have reached your limit: Daily request quota exhausted. Try again in 30 seconds.",
        ),
        (
            429,
            {"detail": "Request was throttled."},
            {"Retry-After": "3600"},
            "You have reached your limit: Request was throttled. Try again in 60 minutes.",
        ),
        (
            503,
            {"detail": "No worker answered within 30 s."},
            {"Retry-After": "5"},
            "The model is busy or temporarily unavailable: No worker answered within 30 s. "
            "Please try again in a moment.",
        ),
    ],
)
def test_errors_are_shown_in_plain_words_from_the_detail(widget_page, status, body, headers, words):
    widget_page.answer("POST", PREDICT, (status, body, headers) if headers else (status, body))
    page = widget_page.open(**DIGITS)
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_have_text(words)
    expect(page.locator(".try-it-status")).to_have_text("Failed")
    expect(page.get_by_role("button", name="Run")).to_be_enabled()


def test_anonymous_visitors_are_asked_to_sign_in(widget_page):
    page = widget_page.open(**dict(DIGITS, data_authenticated="false"))
    link = page.get_by_role("link", name="Sign in to try this model")
    expect(link).to_have_attribute("href", "/accounts/login/?next=/models/demo/digits/")
    expect(page.get_by_role("button", name="Run")).to_have_count(0)
    expect(page.locator("canvas")).to_have_count(0)


def test_without_the_authenticated_attribute_the_navigation_tells_who_is_signed_in(widget_page):
    attributes = {key: value for key, value in IRIS.items() if key != "data_authenticated"}
    page = widget_page.open(signed_in_navigation=True, **attributes)
    expect(page.get_by_role("button", name="Run")).to_be_visible()
    expect(page.get_by_role("link", name="Sign in to try this model")).to_have_count(0)


def test_an_ended_session_is_asked_to_sign_in_again(widget_page):
    widget_page.answer(
        "POST",
        r"^/api/v1/models/demo/iris/predict",
        (403, {"detail": "Authentication credentials were not provided."}),
    )
    page = widget_page.open(**IRIS, data_login_url="/accounts/login/?next=/models/demo/iris/")
    page.get_by_role("button", name="Fill with example").click()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Your session has ended. Sign in again to run the model. Sign in"
    )
    expect(page.get_by_role("alert").get_by_role("link", name="Sign in")).to_have_attribute(
        "href", "/accounts/login/?next=/models/demo/iris/"
    )


def test_the_version_the_page_shows_is_the_one_that_runs(widget_page):
    widget_page.answer("POST", r"^/api/v1/models/demo/iris/predict", (400, {"detail": "unused"}))
    page = widget_page.open(**IRIS, data_version="2")
    page.get_by_role("button", name="Fill with example").click()
    page.get_by_role("button", name="Run").click()
    expect(page.get_by_role("alert")).to_contain_text("unused")
    assert widget_page.calls[0].body["version"] == 2


def test_missing_or_broken_attributes_do_not_break_the_page(widget_page):
    page = widget_page.open(
        data_model="demo/digits", data_signature="{not json", data_labels="", data_authenticated="true"
    )
    expect(page.locator("#try-it")).to_contain_text("no ready version yet")
    page2 = widget_page.open(data_model="demo/digits")
    expect(page2.get_by_role("link", name="Sign in to try this model")).to_have_attribute(
        "href", "/accounts/login/?next=%2Fmodels%2Fdemo%2Fdigits%2F"
    )
    assert page.errors == []


def test_the_widget_is_usable_by_keyboard(widget_page):
    widget_page.answer(
        "POST",
        r"^/api/v1/models/demo/iris/predict",
        (
            200,
            {
                "id": "k",
                "model": "demo/iris",
                "version": 1,
                "status": "succeeded",
                "latency_ms": 1.0,
                "outputs": [],
                "top": [{"label": "virginica", "score": 0.8}],
            },
        ),
    )
    page = widget_page.open(**IRIS)
    page.locator("body").focus()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")  # the brand link, then the first control of the widget
    expect(page.get_by_role("button", name="Fill with example")).to_be_focused()
    page.keyboard.press("Enter")
    for _ in range(5):
        page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Run")).to_be_focused()
    outline = page.get_by_role("button", name="Run").evaluate("b => getComputedStyle(b).outlineStyle")
    assert outline != "none"
    page.keyboard.press("Enter")
    expect(page.locator(".try-it-label")).to_have_text("virginica")


def test_the_widget_fits_a_phone_screen(widget_page):
    widget_page.answer("POST", PREDICT, (200, DIGIT_RESULT))
    page = widget_page.open(**DIGITS)
    page.set_viewport_size({"width": 360, "height": 740})
    draw_vertical_stroke(page)
    page.get_by_role("button", name="Run").click()
    expect(page.locator(".try-it-label")).to_have_text("1")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    canvas = page.locator("canvas.try-it-canvas").bounding_box()
    assert 200 <= canvas["width"] <= 300 and canvas["x"] >= 0
