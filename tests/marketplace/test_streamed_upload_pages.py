"""The upload pages stream the model file into storage as the body is read (before the view runs), and still
check the CSRF token: a refused request keeps nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client

from marketplace.models import Model, ModelVersion
from tests.conftest import PASSWORD

from .conftest import onnx_model_bytes, upload_file

pytestmark = pytest.mark.django_db


def model_files() -> set[Path]:
    return {p for p in (Path(settings.MEDIA_ROOT) / "models").rglob("*") if p.is_file()}


def form(name: str, content: bytes) -> dict:
    return {"name": name, "file": upload_file(content, "m.onnx"), "task": "other", "visibility": "public"}


@pytest.fixture
def checked_client(alice):
    client = Client(enforce_csrf_checks=True)
    assert client.login(username="alice", password=PASSWORD)
    return client


def test_an_upload_without_the_csrf_token_is_refused_and_keeps_nothing(checked_client):
    before = model_files()
    response = checked_client.post("/models/new/", form("no-token", onnx_model_bytes(bias=7.25)))
    assert response.status_code == 403
    assert not Model.objects.filter(name="no-token").exists()
    assert model_files() == before


def test_an_upload_with_the_csrf_token_streams_the_file_into_storage(checked_client, settings):
    settings.MODEL_UPLOAD_WAIT_SECONDS = 0  # no worker here: the version stays validating
    checked_client.get("/models/new/")
    token = checked_client.cookies[settings.CSRF_COOKIE_NAME].value
    content = onnx_model_bytes(bias=7.75)
    response = checked_client.post(
        "/models/new/", {**form("with-token", content), "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302, response.content.decode()[:500]
    version = ModelVersion.objects.get(model__name="with-token")
    assert (Path(settings.MEDIA_ROOT) / version.file.name).read_bytes() == content
