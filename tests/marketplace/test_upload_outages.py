"""An upload's validation is never lost: refused whole when the broker is down, queued again when its task was
lost. The broker and the worker are real; the broker "down" is a closed port."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings

from marketplace import services
from marketplace.models import Model, ModelVersion
from tests.portal.test_outages import broker_down

from .conftest import onnx_model_bytes, upload_file


def stored_model_files() -> list[Path]:
    return [path for path in (Path(settings.MEDIA_ROOT) / "models").rglob("*") if path.is_file()]


@pytest.mark.django_db(transaction=True)
def test_an_upload_while_the_broker_is_down_answers_503_and_leaves_nothing_behind(api):
    files_before = stored_model_files() if (Path(settings.MEDIA_ROOT) / "models").exists() else []
    with broker_down():
        response = api.post(
            "/api/v1/models",
            {"name": "unqueued", "file": upload_file(onnx_model_bytes(bias=0.25))},
            format="multipart",
        )
    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) > 0
    assert response.json()["unavailable"] == "task queue"
    assert not Model.objects.filter(name="unqueued").exists()
    assert not ModelVersion.objects.exists()
    assert stored_model_files() == files_before


@pytest.mark.django_db(transaction=True)
def test_a_version_whose_validation_task_was_lost_is_queued_again_once_and_validated(
    alice, celery_worker_process
):
    stored = services.store_upload(file=upload_file(onnx_model_bytes(bias=0.5)), limit=1 << 30)
    version = services.model_create(owner=alice, name="lost-task", stored=stored)  # no task was ever queued
    ModelVersion.objects.filter(pk=version.pk).update(created_at=version.created_at - timedelta(minutes=11))
    # A fresh upload is left alone: its task may simply be waiting in the queue.
    fresh = services.version_create(model=version.model, stored=stored)

    assert services.validations_resume(older_than=timedelta(minutes=10)) == [version.pk]
    assert services.validations_resume(older_than=timedelta(minutes=10)) == []  # once per period

    deadline = time.monotonic() + 60
    while ModelVersion.objects.get(pk=version.pk).status == ModelVersion.Status.VALIDATING:
        assert time.monotonic() < deadline, "the queued-again validation never ran"
        time.sleep(0.2)
    assert ModelVersion.objects.get(pk=version.pk).status == ModelVersion.Status.READY
    assert ModelVersion.objects.get(pk=fresh.pk).status == ModelVersion.Status.VALIDATING


@pytest.mark.django_db(transaction=True)
def test_a_lost_optimization_job_is_queued_again_to_the_optimizer(publish, celery_worker_process):
    from .optimize_models import digits_example, trained_mlp

    content, _ = trained_mlp()
    publish("mlp", content=content, task="tabular-classification")
    ModelVersion.objects.filter(model__name="mlp", number=1).update(
        signature={
            "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}],
            "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
        },
        example=json.dumps(digits_example()),
    )
    source = ModelVersion.objects.get(model__name="mlp", number=1)
    # What `version_optimize` leaves for its job, as if the broker lost that job: no file yet, no task.
    derived = services.version_create(
        model=source.model,
        stored=services.StoredFile(name="", size=0, sha256=""),
        derived_from=source,
        optimization={"method": "dynamic-int8"},
    )
    ModelVersion.objects.filter(pk=derived.pk).update(created_at=derived.created_at - timedelta(minutes=11))

    assert services.validations_resume(older_than=timedelta(minutes=10)) == [derived.pk]
    deadline = time.monotonic() + 120
    while (current := ModelVersion.objects.get(pk=derived.pk)).status == ModelVersion.Status.VALIDATING:
        assert time.monotonic() < deadline, "the optimization queued again never ran"
        time.sleep(0.2)
    assert current.status == ModelVersion.Status.READY, current.reason
    assert current.sha256 and current.optimization["size_after"] == current.size < len(content)
