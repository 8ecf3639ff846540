"""Server-rendered catalog pages: home, browse, model page, and the web upload forms."""

from __future__ import annotations

import html
import json
import re

import pytest

from marketplace.models import Model

from .conftest import onnx_model_bytes, torch_export_bytes, torchscript_bytes, upload_file


@pytest.mark.django_db
def test_home_shows_most_used_and_newest_public_models(client, publish):
    busy = publish("busy")
    Model.objects.filter(pk=busy.pk).update(runs=100)
    publish("fresh")
    page = client.get("/").content.decode()
    assert "Most used" in page and "Newest" in page
    assert "/models/alice/busy/" in page and "/models/alice/fresh/" in page
    assert 'name="q"' in page


@pytest.mark.django_db
def test_browse_filters_searches_and_paginates(client, publish):
    publish("digits", task="image-classification", description="handwritten digits", tags=["vision"])
    publish("wine", task="tabular-classification", tags=["tabular"])
    assert "/models/alice/wine/" in client.get("/models/").content.decode()
    page = client.get("/models/?q=handwritten").content.decode()
    assert "/models/alice/digits/" in page and "/models/alice/wine/" not in page
    page = client.get("/models/?tag=tabular").content.decode()
    assert "/models/alice/wine/" in page and "/models/alice/digits/" not in page
    page = client.get("/models/?task=image-classification&sort=name").content.decode()
    assert "/models/alice/digits/" in page and "/models/alice/wine/" not in page
    for index in range(21):
        publish(f"bulk-{index}")
    page = client.get("/models/?sort=name").content.decode()
    assert "Page 1 of 2" in page
    assert "/models/alice/wine/" in client.get("/models/?sort=name&page=2").content.decode()


@pytest.mark.django_db
def test_the_model_page_shows_signature_versions_snippets_and_try_it_data(client, publish):
    publish(
        "tiny", task="image-classification", labels=["a", "b", "c"], preprocessing={"width": 8, "height": 8}
    )
    page = client.get("/models/alice/tiny/").content.decode()
    assert "<code>features</code>" in page and "<code>[-1, 4]</code>" in page
    assert "/api/v1/models/alice/tiny/versions/1/file" in page
    text = html.unescape(re.sub(r"<[^>]+>", "", page))
    assert "curl http://testserver/api/v1/models/alice/tiny/predict" in text
    assert """-d '{"inputs": {"features": [[0, 0, 0, 0]]}}'""" in text
    assert 'httpclient.InferInput("features", [1, 4], "FP32")' in html.unescape(page)
    section = page.split('id="try-it"', 1)[1].split(">", 1)[0]
    attributes = dict(re.findall(r'(data-[a-z]+)="([^"]*)"', section))
    assert attributes["data-model"] == "alice/tiny"
    assert attributes["data-task"] == "image-classification"
    assert json.loads(html.unescape(attributes["data-signature"]))["inputs"][0]["name"] == "features"
    assert json.loads(html.unescape(attributes["data-labels"])) == ["a", "b", "c"]
    assert json.loads(html.unescape(attributes["data-preprocessing"]))["width"] == 8
    assert "Upload a new version" not in page  # not the owner


@pytest.mark.django_db
def test_the_owner_edits_toggles_visibility_and_deletes(alice_client, publish):
    from django.test import Client

    publish("tiny")
    assert "Upload a new version" in alice_client.get("/models/alice/tiny/settings/").content.decode()
    response = alice_client.post(
        "/models/alice/tiny/edit/",
        {
            "task": "tabular-regression",
            "description": "# New card",
            "tags": "x, y",
            "labels": "",
            "license": "MIT",
            "visibility": "public",
            "preprocessing": "",
        },
    )
    assert response.status_code == 302
    model = Model.objects.get(name="tiny")
    assert model.tags == ["x", "y"] and model.license == "MIT" and model.task == "tabular-regression"
    alice_client.post("/models/alice/tiny/visibility/")
    assert Model.objects.get(name="tiny").visibility == "private"
    assert Client().get("/models/alice/tiny/").status_code == 404
    assert alice_client.post("/models/alice/tiny/delete/").status_code == 302
    assert not Model.objects.filter(name="tiny").exists()


@pytest.mark.django_db
def test_another_user_cannot_use_the_owner_forms(client, publish, bob):
    publish("tiny")
    client.force_login(bob)
    assert client.post("/models/alice/tiny/delete/").status_code == 404
    assert client.post("/models/alice/tiny/edit/", {"task": "other"}).status_code == 404
    assert Model.objects.filter(name="tiny").exists()


@pytest.mark.django_db
def test_the_upload_page_asks_anonymous_visitors_to_log_in(client):
    response = client.get("/models/new/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


@pytest.mark.django_db
def test_the_upload_page_has_a_progress_bar(alice_client):
    page = alice_client.get("/models/new/").content.decode()
    assert 'role="progressbar"' in page and "js/upload.js" in page


@pytest.mark.django_db
def test_the_upload_form_is_in_sections_with_the_advanced_fields_folded_and_every_field_shown(alice_client):
    import re

    from marketplace.forms import ModelUploadForm

    page = alice_client.get("/models/new/").content.decode()
    assert "<legend>The model</legend>" in page and "<legend>Its page</legend>" in page
    advanced = page.split('<details class="upload-section upload-advanced"')[1].split("</details>")[0]
    assert advanced.startswith(">")  # folded: not open
    for name in ("preprocessing", "signature", "example", "tokenizer", "notes"):
        assert f'name="{name}"' in advanced, name
    # Every field of the form is on the page, once, with its help rendered (a link, not escaped markup).
    for name in ModelUploadForm.base_fields:
        assert len(re.findall(rf'name="{name}"', page)) == 1, name
    assert "&lt;a " not in page and "GGUF" in page


@pytest.mark.django_db
def test_a_form_back_with_a_problem_asks_for_the_file_again_and_opens_what_is_wrong(alice_client):
    response = alice_client.post(
        "/models/new/",
        {
            "name": "needs-fixing",
            "file": upload_file(onnx_model_bytes(), "m.onnx"),
            "task": "other",
            "visibility": "public",
            "signature": "{not json",
        },
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "Choose the model file again" in page
    assert "No file is chosen any more" in page  # beside the file field too
    assert 'To fix: <a class="fix-link" href="#id_signature">Signature</a>.' in page
    assert '<details class="upload-section upload-advanced" open>' in page
    assert not alice_client.get("/models/new/").content.decode().count("Choose the model file again")


@pytest.mark.django_db
def test_a_refused_file_asks_for_a_file_again(alice_client):
    response = alice_client.post(
        "/models/new/",
        {
            "name": "bad",
            "file": upload_file(b"not a model", "m.onnx"),
            "task": "other",
            "visibility": "public",
        },
    )
    assert response.status_code == 415
    page = response.content.decode()
    assert "The file was refused" in page and "Choose the model file again" in page
    assert "To fix:" not in page  # no field of the form is wrong


@pytest.mark.django_db
def test_the_upload_forms_help_shows_code_as_code_not_markdown(alice_client):
    page = alice_client.get("/models/new/").content.decode()
    assert "a predict body&#x27;s <code>inputs</code> (JSON)" in page
    assert "`" not in page.split('<form id="upload-form"')[1].split("</form>")[0]
    # A checkbox comes before its label.
    assert re.search(r'<label for="id_gated"><input type="checkbox" name="gated"[^>]*> Gated</label>', page)


@pytest.mark.django_db
def test_the_web_form_refuses_a_file_over_the_limit_with_413(alice_client, settings):
    settings.MODEL_UPLOAD_MAX_BYTES = 64
    response = alice_client.post(
        "/models/new/",
        {
            "name": "big",
            "file": upload_file(onnx_model_bytes(), "m.onnx"),
            "task": "other",
            "visibility": "public",
        },
    )
    assert response.status_code == 413
    assert "upload limit" in response.content.decode()
    assert not Model.objects.filter(name="big").exists()


@pytest.mark.django_db
def test_the_web_form_refuses_a_pickle_at_once(alice_client):
    import pickle

    response = alice_client.post(
        "/models/new/",
        {
            "name": "p",
            "file": upload_file(pickle.dumps({"a": 1}), "m.pt"),
            "task": "other",
            "visibility": "public",
        },
    )
    assert response.status_code == 415
    assert "pickle" in response.content.decode()
    assert not Model.objects.filter(name="p").exists()


@pytest.mark.django_db(transaction=True)
def test_the_web_form_uploads_a_model_and_a_new_version(alice_client, celery_worker_process):
    response = alice_client.post(
        "/models/new/",
        {
            "name": "web-tiny",
            "file": upload_file(onnx_model_bytes(), "w.onnx"),
            "task": "other",
            "visibility": "public",
            "description": "# Web",
            "tags": "web",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert response["Location"] == "/models/alice/web-tiny/"
    model = Model.objects.get(name="web-tiny")
    assert model.versions.get().status == "ready" and model.latest_format == "onnx"
    response = alice_client.post(
        "/models/alice/web-tiny/versions/new/",
        {"file": upload_file(torchscript_bytes(), "v2.pt"), "notes": "ts"},
    )
    assert response.status_code == 302
    response = alice_client.post(
        "/models/alice/web-tiny/versions/new/", {"file": upload_file(torch_export_bytes(), "v3.pt2")}
    )
    assert response.status_code == 302
    assert list(model.versions.values_list("number", "format")) == [
        (3, "torch-export"),
        (2, "torchscript"),
        (1, "onnx"),
    ]
    response = alice_client.post(
        "/models/alice/web-tiny/versions/new/", {"file": upload_file(onnx_model_bytes()[:30], "bad.onnx")}
    )
    assert response.status_code == 415
    assert "rejected" in response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "words, found",
    [
        ("sentence similarity", "minilm"),
        ("wine classifier", "wine"),
        ("mlp digits", "digits"),
        ("image classification", "digits"),
    ],
)
def test_search_finds_models_on_two_words_best_match_first(client, publish, words, found):
    publish("minilm", task="feature-extraction", description="Sentence embeddings for similarity search.")
    publish("wine", task="tabular-classification", description="A classifier of wines.", tags=["tabular"])
    publish("digits", task="image-classification", description="A small MLP.", tags=["vision"])
    publish("other", task="tabular-regression", description="House prices.")
    page = client.get("/models/", {"q": words}).content.decode()
    listed = re.findall(r'href="/models/alice/([^/]+)/"', page)
    assert listed and listed[0] == found, listed
    assert "other" not in listed
    api = client.get("/api/v1/models", {"q": words}).json()
    assert api["results"][0]["name"] == found


@pytest.mark.django_db
def test_a_search_that_finds_nothing_suggests_dropping_a_filter(client, publish):
    publish("wine", task="tabular-classification")
    page = client.get("/models/", {"q": "wine", "task": "image-classification"}).content.decode()
    assert "No models match" in page
    assert 'href="/models/?q=wine"' in page  # the same search without the task filter
