"""The job path's services: running a queued prediction once, attempts, and the reaper."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from inference.models import Prediction
from inference.services import inputs_to_json, prediction_execute, predictions_reap

from . import builders
from .conftest import assert_same, local_run

pytestmark = pytest.mark.django_db


def job(user, version, inputs, **fields) -> Prediction:
    return Prediction.objects.create(
        user=user, version=version, created_at=timezone.now(), inputs=inputs_to_json(inputs), **fields
    )


def test_a_job_runs_and_records_its_outputs_and_timings(alice, mixed):
    inputs = builders.mixed_inputs(batch=2)
    prediction = job(alice, mixed, inputs)
    prediction_execute(prediction_id=str(prediction.id))
    prediction.refresh_from_db()
    assert prediction.status == "succeeded" and prediction.attempts == 1
    assert prediction.started_at and prediction.finished_at and prediction.compute_ms > 0
    assert prediction.queue_ms >= 0 and prediction.bytes_out > 0
    expected = local_run(builders.mixed_onnx(), inputs)
    for output in prediction.outputs:
        data = np.asarray(output["data"], dtype=object if output["datatype"] == "BYTES" else None)
        assert_same(expected[output["name"]], data)
    mixed.model.refresh_from_db()
    assert mixed.model.runs == 1


def test_a_redelivered_finished_prediction_is_not_run_again(alice, mixed):
    prediction = job(alice, mixed, builders.mixed_inputs(batch=1))
    prediction_execute(prediction_id=str(prediction.id))
    finished_at = Prediction.objects.get(id=prediction.id).finished_at
    prediction_execute(prediction_id=str(prediction.id))
    prediction.refresh_from_db()
    assert prediction.attempts == 1 and prediction.finished_at == finished_at


def test_a_prediction_redelivered_too_often_fails_with_the_reason(alice, mixed, settings):
    settings.PREDICTION_MAX_ATTEMPTS = 2
    prediction = job(alice, mixed, builders.mixed_inputs(batch=1), status="running", attempts=2)
    prediction_execute(prediction_id=str(prediction.id))
    prediction.refresh_from_db()
    assert prediction.status == "failed" and "lost 2 times" in prediction.error


def test_a_model_error_fails_the_prediction_with_the_runtimes_message(alice):
    version = builders.publish(
        owner=alice,
        name="broken",
        data=b"not an onnx file",
        signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]},
    )
    prediction = job(alice, version, {"x": np.zeros(1, dtype=np.float32)})
    prediction_execute(prediction_id=str(prediction.id))
    prediction.refresh_from_db()
    assert prediction.status == "failed" and "could not open the model" in prediction.error


def test_the_reaper_fails_predictions_running_past_the_hard_limit(alice, mixed, settings):
    settings.CELERY_TASK_TIME_LIMIT, settings.PREDICTION_REAP_MARGIN = 35, 15
    stuck = job(
        alice, mixed, {}, status="running", attempts=1, started_at=timezone.now() - timedelta(seconds=51)
    )
    fresh = job(
        alice, mixed, {}, status="running", attempts=1, started_at=timezone.now() - timedelta(seconds=10)
    )
    assert predictions_reap() == 1
    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert stuck.status == "failed" and "Timed out" in stuck.error and stuck.finished_at
    assert fresh.status == "running"


def test_the_reaper_fails_jobs_no_worker_started(alice, mixed, settings):
    settings.PREDICTION_QUEUED_MAX_SECONDS = 60
    old = job(alice, mixed, {})
    Prediction.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(seconds=61))
    assert predictions_reap() == 1
    old.refresh_from_db()
    assert old.status == "failed" and "No worker" in old.error
