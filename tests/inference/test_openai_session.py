"""The chat on a model page calls /v1 with the visitor's session: CSRF-checked like the site's own forms, and
refused to anonymous visitors as to a program without a key."""

from __future__ import annotations

import json

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db

BODY = json.dumps({"model": "alice/nothing", "messages": [{"role": "user", "content": "Hi"}]})


def test_a_session_call_needs_the_csrf_token(alice):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    refused = browser.post("/v1/chat/completions", BODY, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf"
    browser.get("/")  # the page sets the CSRF cookie, as the model page does for its chat
    token = browser.cookies["csrftoken"].value
    passed = browser.post(
        "/v1/chat/completions", BODY, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    # Past the CSRF check, as alice: the model does not exist.
    assert passed.status_code == 404 and passed.json()["error"]["code"] == "model_not_found"


def test_an_anonymous_call_is_401_as_without_a_key():
    answer = Client().post("/v1/chat/completions", BODY, content_type="application/json")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "invalid_api_key"


def test_a_chat_model_still_validating_is_409_with_retry_after(alice):
    from marketplace.models import ModelVersion
    from portal.models import ApiKey

    from .llm_builders import publish_smollm2

    publish_smollm2(owner=alice, name="fresh-chat")
    ModelVersion.objects.filter(model__name="fresh-chat").update(status=ModelVersion.Status.VALIDATING)
    key = ApiKey.issue(user=alice, name="k", scopes=["read", "predict"])[1]
    body = json.dumps({"model": "alice/fresh-chat", "messages": [{"role": "user", "content": "Hi"}]})
    answer = Client().post(
        "/v1/chat/completions", body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert answer.status_code == 409 and answer["Retry-After"] == "5"
    error = answer.json()["error"]
    assert error["code"] == "model_validating" and "is validating" in error["message"]
