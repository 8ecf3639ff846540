"""Answers name no host, port or path: a storage or Redis error reaches the caller, and the ledger, as a fixed
message; the detail goes to the log."""

from __future__ import annotations

import random
import time

import pytest
from django.conf import settings as django_settings
from django.core.files.storage import default_storage

from inference.models import Prediction
from inference.scheduling import queue
from marketplace import files
from portal import quotas
from tests.conftest import free_port
from tests.portal.test_outages import point_cache_at_closed_port

from . import builders
from .conftest import post_json

DIGITS_INPUTS = {"inputs": {"pixels": [[0.5] * 64]}}
V2_DIGITS_INPUTS = {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [0.5] * 64}]}


def assert_names_no_place(text: str, *places: str) -> None:
    for place in ("127.0.0.1", "localhost", "Errno", "/tmp", str(django_settings.MEDIA_ROOT), *places):
        assert place not in text, f"{place!r} in {text!r}"


@pytest.fixture
def closed_redis(settings):
    """Redis for the request queue and the cache pointed at a port nobody listens on (a stopped server)."""
    port = str(free_port())
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    point_cache_at_closed_port(settings)
    queue.reset_client()
    quotas.forget_redis_scripts()  # registered on the client of the Redis in force
    yield port
    queue.reset_client()
    quotas.forget_redis_scripts()


def test_a_reply_wait_on_a_stopped_redis_fails_with_a_fixed_message(closed_redis):
    call = queue.PendingCall(id="call", queue_key="q", payload=b"")
    with pytest.raises(queue.Unavailable) as raised:
        queue.wait(call, 0.1)
    assert str(raised.value) == "The request queue is unavailable; retry."
    assert_names_no_place(str(raised.value), closed_redis)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/v2/models/alice/digits/infer", "/api/v1/models/alice/digits/predict"])
def test_with_redis_stopped_a_prediction_answers_503_naming_no_host(
    client, alice_key, digits, closed_redis, path
):
    response = post_json(
        client, path, V2_DIGITS_INPUTS if path.startswith("/v2") else DIGITS_INPUTS, alice_key
    )
    assert response.status_code == 503, response.content
    assert response["Retry-After"]
    assert_names_no_place(response.content.decode(), closed_redis)


@pytest.mark.django_db
def test_a_stored_file_that_cannot_be_read_is_unavailable_without_its_path(alice, settings, tmp_path):
    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"
    with pytest.raises(files.FileUnavailable) as raised:
        files.local_copy(name="models/ab/" + "ab" * 32, sha256="ab" * 32)
    assert str(raised.value) == "the stored file is not available"
    assert_names_no_place(str(raised.value), "models/ab")


@pytest.mark.django_db(transaction=True)
def test_a_model_whose_stored_file_is_gone_fails_without_naming_its_path(
    client, alice, alice_key, celery_worker_process
):
    # Bytes of its own: no other test's copy, in storage or in a worker's cache, is touched.
    data = builders.digits_onnx(seed=random.randrange(1 << 30))
    version = builders.publish(owner=alice, name="digits", data=data)
    default_storage.delete(version.file.name)

    response = post_json(client, "/api/v1/models/alice/digits/predict", DIGITS_INPUTS, alice_key)

    assert response.status_code in {200, 503}, response.content
    assert_names_no_place(response.content.decode(), version.file.name, version.sha256)
    deadline = time.monotonic() + 30
    while not (
        row := Prediction.objects.filter(version=version).exclude(status__in=["queued", "running"]).first()
    ):
        assert time.monotonic() < deadline, "the call was never recorded"
        time.sleep(0.1)
    assert row.status == "failed"
    assert "not available" in row.error
    assert_names_no_place(row.error, version.file.name, version.sha256)
