"""The model page's code samples send what the model takes, and the owner's settings have their own page."""

from __future__ import annotations

import html
import json
import re

import pytest
from django.test import Client

from marketplace.models import Model, ModelVersion

pytestmark = pytest.mark.django_db


def samples(page: str) -> dict[str, str]:
    """Each sample's text as a reader copies it (the Copy button copies the code element's text)."""
    found = re.findall(r'<code id="snippet-([a-z]+)"[^>]*>(.*?)</code>', page, re.S)
    return {key: html.unescape(re.sub(r"<[^>]+>", "", code)) for key, code in found}


def test_a_text_models_samples_send_its_example_text_not_token_ids(client, publish):
    model = publish("topics", task="text-classification", labels=["sport", "tech"])
    ModelVersion.objects.filter(model=model).update(
        tokenizer="tokenizers/x.json", example=json.dumps(["The keeper saved a penalty."])
    )
    code = samples(client.get("/models/alice/topics/").content.decode())
    assert """-d '{"text": "The keeper saved a penalty."}'""" in code["curl"]
    assert 'body = {"text": "The keeper saved a penalty."}' in code["python"]
    assert "input_ids" not in "".join(code.values())
    assert 'httpclient.InferInput("text", [1], "BYTES")' in code["tritonclient"]


def test_an_encoders_samples_send_all_its_example_texts(client, publish):
    model = publish("embed", task="feature-extraction")
    ModelVersion.objects.filter(model=model).update(
        tokenizer="tokenizers/x.json", example=json.dumps(["A man eats.", "A man's bread."])
    )
    code = samples(client.get("/models/alice/embed/").content.decode())
    # The apostrophe is quoted for the shell, so the line runs as written.
    assert """-d '{"text": ["A man eats.", "A man'"'"'s bread."]}'""" in code["curl"]
    assert 'result["embeddings"]' in code["python"]


def test_the_samples_send_the_versions_example_rather_than_zeros(client, publish):
    model = publish("tiny")
    ModelVersion.objects.filter(model=model).update(example=json.dumps({"features": [[1.5, 2, 3, 4]]}))
    code = samples(client.get("/models/alice/tiny/").content.decode())
    assert """-d '{"inputs": {"features": [[1.5, 2, 3, 4]]}}'""" in code["curl"]
    assert "np.array([[1.5, 2, 3, 4]], dtype=np.float32)" in code["tritonclient"]


def test_a_tabular_models_samples_send_the_example_row_of_its_form(client, publish):
    publish("wine", task="tabular-classification", preprocessing={"example": [13.2, 1.8, 2.1, 11.0]})
    code = samples(client.get("/models/alice/wine/").content.decode())
    assert """{"inputs": {"features": [[13.2, 1.8, 2.1, 11.0]]}}""" in code["curl"]
    assert 'print(result.get("top") or result["outputs"])' in code["python"]


def test_a_chat_models_samples_use_the_openai_client(client, publish):
    model = publish("chat")
    Model.objects.filter(pk=model.pk).update(task="text-generation")
    code = samples(client.get("/models/alice/chat/").content.decode())
    assert 'OpenAI(base_url="http://testserver/v1", api_key=os.environ["MODELPORT_KEY"])' in code["openai"]
    assert 'model="alice/chat"' in code["openai"]
    assert "http://testserver/v1/chat/completions" in code["curl"]


def test_the_page_says_where_the_key_comes_from_and_offers_copy_buttons(client, publish):
    publish("tiny")
    page = client.get("/models/alice/tiny/").content.decode()
    assert "$MODELPORT_KEY" in page
    assert 'href="/settings/keys/"' in page and "export MODELPORT_KEY=" in page
    assert page.count('data-copy="snippet-') == 3
    assert "js/snippets.js" in page


def test_the_owner_has_a_settings_tab_and_visitors_do_not(alice_client, publish, bob):
    publish("tiny")
    owner_page = alice_client.get("/models/alice/tiny/").content.decode()
    assert 'href="/models/alice/tiny/settings/"' in owner_page
    assert "Upload a new version" not in owner_page  # the model page is the card and the widget
    settings_page = alice_client.get("/models/alice/tiny/settings/").content.decode()
    for section in ("Upload a new version", "Model card and details", "Make private", "Delete alice/tiny"):
        assert section in settings_page
    visitor = Client()
    assert "/models/alice/tiny/settings/" not in visitor.get("/models/alice/tiny/").content.decode()
    visitor.force_login(bob)
    assert visitor.get("/models/alice/tiny/settings/").status_code == 404


def test_an_owner_without_a_card_is_offered_to_write_one(alice_client, publish):
    publish("bare", description="")
    assert "Write a model card" in alice_client.get("/models/alice/bare/").content.decode()
    visitor = Client().get("/models/alice/bare/").content.decode()
    assert "Write a model card" not in visitor and "No model card yet." in visitor


def test_the_try_it_widget_comes_before_the_card_in_the_right_column(client, publish):
    publish("tiny", description="# Tiny\n\nA card.")
    page = client.get("/models/alice/tiny/").content.decode()
    side = page.split('<aside class="model-side">', 1)[1]
    assert 'id="try-it"' in side.split("</aside>", 1)[0]
