"""The whole journey of a new member, in Chromium against the real processes (gunicorn with 2 workers,
a Celery worker, PostgreSQL, Redis); nothing is routed or mocked.

Sign up, upload an ONNX model through /models/new/ and watch it become ready, run it from its page, draw a
digit on the demo digits model and see it recognised, run the demo tabular model from its form, create an API
key and call the API with it from Python, and find those calls on the usage page.
"""

from __future__ import annotations

import base64
import io
import re
import time

import numpy as np
import pytest
import requests
from django.core.management import call_command
from playwright.sync_api import expect

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

READY_TIMEOUT_S = 90
RUN_TIMEOUT_MS = 60_000


@pytest.fixture
def demo_catalog():
    call_command("seed_demo", "--no-text")


def linear_onnx() -> bytes:
    """y = x @ W + b for x of shape [N, 3]: small enough to check its answer by hand."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32), "W")
    bias = numpy_helper.from_array(np.array([0.25, -1.0], dtype=np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def digit_png(digit: int) -> bytes:
    """The first image of `digit` in scikit-learn's digits, as a PNG of dark ink on white paper."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    index = int(np.flatnonzero(digits.target == digit)[0])
    paper = 255 - np.round(digits.images[index] * 255 / 16).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(paper, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def draw(page, strokes: list[list[tuple[float, float]]]) -> None:
    """Draw polylines on the try-it canvas; points are fractions of its width and height."""
    canvas = page.locator("canvas.try-it-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    for stroke in strokes:
        points = [(box["x"] + fx * box["width"], box["y"] + fy * box["height"]) for fx, fy in stroke]
        page.mouse.move(*points[0])
        page.mouse.down()
        for (x0, y0), (x1, y1) in zip(points, points[1:], strict=False):
            for step in range(1, 11):
                page.mouse.move(x0 + (x1 - x0) * step / 10, y0 + (y1 - y0) * step / 10)
        page.mouse.up()


def sign_up(page, base_url: str, username: str) -> None:
    page.goto(base_url + "/accounts/signup/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Email").fill(f"{username}@example.com")
    page.get_by_label("Password", exact=True).fill("a-long-and-unusual-passphrase")
    page.get_by_label("Password confirmation").fill("a-long-and-unusual-passphrase")
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_role("status")).to_contain_text(f"Welcome to Modelport, {username}.")


def upload_and_wait_until_ready(page, base_url: str, name: str, model: bytes) -> None:
    page.goto(base_url + "/models/new/")
    page.get_by_label("Name").fill(name)
    page.get_by_label("File").set_input_files(
        files=[{"name": f"{name}.onnx", "mimeType": "application/octet-stream", "buffer": model}]
    )
    page.get_by_role("button", name="Upload", exact=True).click()
    # A progress bar shows while the file goes up (too briefly to catch for 150 bytes), then the browser lands
    # on the new model's page, where the version is validated by the worker.
    page.wait_for_url(re.compile(rf"/models/carol/{name}/$"), timeout=RUN_TIMEOUT_MS)
    deadline = time.monotonic() + READY_TIMEOUT_S
    versions = page.locator(".versions-table")
    while not versions.get_by_role("link", name="Download").count():
        assert time.monotonic() < deadline, f"v1 of {name} never became ready: {versions.inner_text()}"
        expect(versions).not_to_contain_text("rejected")
        time.sleep(1)
        page.reload()
    expect(versions).to_contain_text("onnx")


def run(page) -> None:
    page.locator("#try-it").get_by_role("button", name="Run").click()
    expect(page.locator("#try-it .try-it-status")).to_have_text("Done", timeout=RUN_TIMEOUT_MS)


def test_a_new_member_uploads_tries_and_calls_models(page, live_web, celery_worker_process, demo_catalog):
    base = live_web.url
    sign_up(page, base, "carol")

    # An ONNX model of her own: uploaded with a progress bar, validated by the worker, then tried on its page.
    upload_and_wait_until_ready(page, base, "linear", linear_onnx())
    try_it = page.locator("#try-it")
    editor = try_it.get_by_label("x", exact=True)
    assert page.evaluate("text => JSON.parse(text)", editor.input_value()) == [[0.5, 0.5, 0.5]]
    run(page)
    # [0.5, 0.5, 0.5] @ [[1, 2], [3, 4], [5, 6]] + [0.25, -1] = [4.75, 5]
    expect(try_it.locator("table.try-it-outputs")).to_contain_text("4.75, 5")
    expect(try_it.locator(".try-it-result")).to_contain_text("version 1")

    # The demo digits model: draw a 7 on the canvas and see it recognised.
    page.goto(base + "/models/demo/digits/")
    canvas = try_it.locator("canvas.try-it-canvas")
    expect(canvas).to_be_visible()
    assert canvas.evaluate("c => [c.width, c.height]") == [280, 280]
    draw(page, [[(0.25, 0.2), (0.75, 0.2), (0.45, 0.85)]])
    run(page)
    expect(try_it.locator(".try-it-label")).to_have_text("7")
    expect(try_it.locator(".try-it-bar")).to_have_count(5)
    expect(try_it.locator(".try-it-result")).to_contain_text(re.compile(r"version \d+ · [\d.]+ ms"))

    # The same model from a file: a 3 from scikit-learn's digits, through the file picker.
    try_it.get_by_label("Or choose an image").set_input_files(
        files=[{"name": "three.png", "mimeType": "image/png", "buffer": digit_png(3)}]
    )
    expect(try_it.locator("img.try-it-preview")).to_be_visible()
    run(page)
    expect(try_it.locator(".try-it-label")).to_have_text("3")

    # The demo tabular model: fill with an example, run, see one of its labels.
    page.goto(base + "/models/demo/wine/")
    try_it.get_by_role("button", name="Fill with example").click()
    expect(try_it.locator(".try-it-fields input")).to_have_count(13)
    expect(try_it.locator(".try-it-fields")).to_contain_text("alcohol")  # the columns' real names
    run(page)
    expect(try_it.locator(".try-it-label")).to_have_text(re.compile(r"^class_[012]$"))

    # An API key, shown once, then used from a program.
    page.goto(base + "/settings/keys/")
    page.get_by_label("Name").fill("journey script")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("New API key").input_value()
    assert key.startswith("mp_")
    response = requests.post(
        f"{base}/api/v1/models/demo/digits/predict",
        headers={"Authorization": f"Bearer {key}"},
        json={"image": base64.b64encode(digit_png(3)).decode()},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["top"][0]["label"] == "3"
    prefix = key.split("_")[1]
    page.goto(base + "/settings/keys/")  # not a reload: that would post the form again
    row = page.locator(".keys-table tbody tr", has_text="journey script")
    expect(row).to_contain_text(f"mp_{prefix}")
    expect(page.locator("main")).not_to_contain_text(key)  # shown once, never again

    # The usage page counts the five runs (four in the browser, one with the key) and names the key. Runs are
    # admitted (the meters) at once; their ledger rows (charts, table) are written in batches, allow a moment.
    page.goto(base + "/settings/usage/")
    today = page.locator(".usage-table tbody tr").first
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not (
        "journey script" in page.locator("main").inner_text()
        and today.locator("td").all_inner_texts()[1:2] == ["5"]
    ):
        time.sleep(0.5)
        page.reload()
    expect(page.locator(".usage-meters .meter-used").nth(1)).to_have_text("5")
    expect(today.locator("td").nth(1)).to_have_text("5")
    expect(page.locator("main")).to_contain_text("journey script")
    assert page.errors == []
