"""A newcomer's first hour, on the embedded default exactly as `make run` serves it (SQLite, the file
broker, no Redis): nothing is routed or mocked, and shell commands run in a fresh shell as a reader runs them.

Search by two words, open the model, find "Try it" in view at 1280×800, run it, copy a code sample, make a
key, run the copied sample with that key and get the widget's answer, for a tabular, an image and a text
model. And the README's quick start, run as written.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest
import requests
from playwright.sync_api import expect

from tests.conftest import PROJECT_ROOT, free_port

from .test_e2e_journey import digit_png

pytestmark = pytest.mark.e2e

STACK_TIMEOUT_S = 900  # a first `make run` trains and validates the demo catalog
RUN_TIMEOUT_MS = 60_000
PASSWORD = "a-long-and-unusual-passphrase"


@dataclass
class EmbeddedSite:
    url: str
    env: dict[str, str]  # a fresh shell's environment for this site: PATH, HOME and where its data lives

    def shell(self, script: str, **env: str) -> str:
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=PROJECT_ROOT,
            env=dict(self.env, **env),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{script}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def embedded_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    port = free_port()
    # Only what a login shell has, plus where this site keeps its data (so it leaves `data/` alone): none of
    # the suite's DATABASE_URL, CELERY_BROKER_URL or REDIS_URL.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(root),
        "LANG": "C.UTF-8",
        "MODELPORT_DATA_DIR": str(root / "data"),
    }
    run_env = dict(env, PORT=str(port), GRPC_PORT=str(free_port()), DEMO_PASSWORD=PASSWORD)
    log_path = root / "make-run.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["make", "run"],
            cwd=PROJECT_ROOT,
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STACK_TIMEOUT_S
        while not ready(url):
            assert process.poll() is None, f"make run stopped:\n{log_path.read_text()[-4000:]}"
            assert time.monotonic() < deadline, f"make run never served:\n{log_path.read_text()[-4000:]}"
            time.sleep(1)
        yield EmbeddedSite(url=url, env=env)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def ready(url: str) -> bool:
    try:
        return requests.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def quick_start_block() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    block = readme.split("<!-- quick-start", 1)[1].split("<!-- /quick-start -->", 1)[0]
    return block.split("```sh\n", 1)[1].split("```", 1)[0]


def json_documents(text: str) -> list:
    decoder, documents, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        document, position = decoder.raw_decode(text, position)
        documents.append(document)
        while position < len(text) and text[position].isspace():
            position += 1
    return documents


def test_the_readme_quick_start_runs_as_written(embedded_site):
    block = quick_start_block()
    assert "make -s createapikey USER=demo" in block
    # The one change: the address of this test's site (the README's is `make run`'s default port).
    out = embedded_site.shell("set -e\n" + block.replace("http://127.0.0.1:8000", embedded_site.url))
    found, wine, topic = json_documents(out)
    assert found["results"][0]["name"] == "wine"
    assert wine["status"] == "succeeded" and wine["top"][0]["label"].startswith("class_")
    assert topic["status"] == "succeeded" and topic["top"][0]["label"] == "sports"


def try_it_in_view(page) -> None:
    """'Try it' and its first field are on screen as the page opens, without scrolling."""
    assert page.evaluate("window.scrollY") == 0
    first_field = page.locator("#try-it").locator("canvas, input, textarea").first
    for locator in (page.get_by_role("heading", name="Try it"), first_field):
        box = locator.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 800, box


def run_widget(page) -> str:
    page.locator("#try-it").get_by_role("button", name="Run").click()
    expect(page.locator("#try-it .try-it-status")).to_have_text("Done", timeout=RUN_TIMEOUT_MS)
    return page.locator("#try-it .try-it-label").inner_text().strip()


def copy_sample(page, key: str) -> str:
    page.locator(f'button[data-copy="snippet-{key}"]').click()
    expect(page.locator(f'button[data-copy="snippet-{key}"]')).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == page.locator(f"#snippet-{key}").inner_text()
    return copied


def test_a_newcomer_goes_from_search_to_their_own_code(page, embedded_site, tmp_path):
    site = embedded_site.url
    page.set_viewport_size({"width": 1280, "height": 800})
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site)

    # Search by two words from the home page, open the best match: the wine classifier.
    page.goto(site + "/")
    page.get_by_label("Search models").fill("wine classifier")
    page.get_by_role("button", name="Search").click()
    page.locator(".model-tile h3 a").first.click()
    page.wait_for_url(re.compile(r"/models/demo/wine/$"))

    # A visitor is asked to sign in; the login page's sign-up link keeps the way back to this model.
    page.get_by_role("link", name="Sign in to try this model").click()
    page.locator("main").get_by_role("link", name="Sign up").click()
    page.get_by_label("Username").fill("newcomer")
    page.get_by_label("Email").fill("newcomer@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(re.compile(r"/models/demo/wine/$"))

    # Tabular: Try it in view, fill with the example, run; the curl sample now sends what the widget sent.
    try_it_in_view(page)
    page.get_by_role("button", name="Fill with example").click()
    wine_label = run_widget(page)
    wine_curl = copy_sample(page, "curl")

    # Image: a 3 from scikit-learn's digits through the file picker; the Python sample.
    page.goto(site + "/models/demo/digits/")
    try_it_in_view(page)
    page.locator("#try-it").get_by_label("Or choose an image").set_input_files(
        files=[{"name": "three.png", "mimeType": "image/png", "buffer": digit_png(3)}]
    )
    digit_label = run_widget(page)
    assert digit_label == "3"
    digits_python = copy_sample(page, "python")

    # Text: the topic classifier's example sentence; the curl sample.
    page.goto(site + "/models/demo/topics/")
    try_it_in_view(page)
    topic_label = run_widget(page)
    topic_curl = copy_sample(page, "curl")

    # A key, made on the keys page, then the copied samples run with it in a shell.
    page.goto(site + "/settings/keys/")
    page.get_by_label("Name").fill("first hour")
    page.get_by_role("button", name="Create key").click()
    key = page.get_by_label("New API key").input_value()
    assert json.loads(embedded_site.shell(wine_curl, MODELPORT_KEY=key))["top"][0]["label"] == wine_label
    assert json.loads(embedded_site.shell(topic_curl, MODELPORT_KEY=key))["top"][0]["label"] == topic_label
    sample = tmp_path / "digits.py"
    sample.write_text(digits_python)
    python = str(PROJECT_ROOT / ".venv" / "bin" / "python")
    printed = embedded_site.shell(f"{python} {sample}", MODELPORT_KEY=key)
    assert ast.literal_eval(printed.strip())[0]["label"] == digit_label
    assert page.errors == []


def test_a_mistyped_model_address_answers_the_sites_404(page, embedded_site):
    response = page.goto(embedded_site.url + "/models/demo/digitz/")
    assert response.status == 404
    expect(page.get_by_role("heading", name="Page not found")).to_be_visible()
    expect(page.get_by_role("link", name="demo/digits", exact=True)).to_be_visible()
    expect(page.locator("nav.nav")).to_contain_text("Models")
    expect(page.locator("main")).not_to_contain_text("DEBUG = True")
