"""The job path: a queued prediction runs once on the runner pool; attempts, the reaper, and the charge."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from inference import ledger
from inference.models import Prediction
from portal.models import UsageDay

from . import builders
from .conftest import assert_same, local_run

pytestmark = pytest.mark.django_db


def job(user, version, inputs, **fields) -> Prediction:
    return Prediction.objects.create(
        user=user,
        version=version,
        created_at=timezone.now(),
        inputs=ledger.inputs_to_json(inputs),
        bytes_in=100,
        **fields,
    )


def usage_of(user) -> tuple:
    row = UsageDay.objects.get(user=user)
    return row.requests, row.succeeded, row.compute_ms


def test_a_job_runs_and_records_its_outputs_and_timings(alice, mixed, run_job):
    inputs = builders.mixed_inputs(batch=2)
    prediction = job(alice, mixed, inputs)
    run_job(prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == "succeeded" and prediction.attempts == 1
    assert prediction.started_at and prediction.finished_at and prediction.compute_ms > 0
    assert prediction.queue_ms >= 0 and prediction.bytes_out > 0
    expected = local_run(builders.mixed_onnx(), inputs)
    assert {output["name"] for output in prediction.outputs} == set(expected)
    for output in prediction.outputs:
        data = np.asarray(output["data"], dtype=object if output["datatype"] == "BYTES" else None)
        assert_same(expected[output["name"]], data)
    mixed.model.refresh_from_db()
    assert mixed.model.runs == 1
    assert prediction.charged
    assert usage_of(alice) == (1, 1, prediction.compute_ms)
    row = UsageDay.objects.get(user=alice)
    assert row.version == mixed and (row.bytes_in, row.bytes_out) == (100, prediction.bytes_out)


def test_a_redelivered_finished_prediction_is_not_run_or_charged_again(alice, mixed, run_job):
    prediction = job(alice, mixed, builders.mixed_inputs(batch=1))
    run_job(prediction.id)
    finished = Prediction.objects.get(id=prediction.id)
    run_job(prediction.id)
    prediction.refresh_from_db()
    assert prediction.attempts == 1 and prediction.finished_at == finished.finished_at
    assert usage_of(alice) == (1, 1, finished.compute_ms)
    mixed.model.refresh_from_db()
    assert mixed.model.runs == 1


def test_a_prediction_redelivered_too_often_fails_with_the_reason(alice, mixed, settings, run_job):
    settings.PREDICTION_MAX_ATTEMPTS = 2
    prediction = job(alice, mixed, builders.mixed_inputs(batch=1), status="running", attempts=2)
    run_job(prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == "failed" and "lost 2 times" in prediction.error
    assert prediction.attempts == 3 and prediction.finished_at
    assert usage_of(alice) == (1, 0, 0)  # a request, no compute


def test_a_model_error_fails_the_prediction_with_the_runtimes_message(alice, run_job):
    version = builders.publish(
        owner=alice,
        name="broken",
        data=b"not an onnx file",
        signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]},
    )
    prediction = job(alice, version, {"x": np.zeros(1, dtype=np.float32)})
    run_job(prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == "failed" and "could not open the model" in prediction.error
    assert prediction.outputs is None
    assert usage_of(alice) == (1, 0, 0)
    version.model.refresh_from_db()
    assert version.model.runs == 0


def test_a_version_no_longer_ready_is_not_run(alice, mixed, run_job):
    prediction = job(alice, mixed, builders.mixed_inputs(batch=1))
    mixed.status = "rejected"
    mixed.save(update_fields=["status"])
    run_job(prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == "failed" and "not ready" in prediction.error


def test_the_reaper_fails_predictions_running_past_the_time_limit_and_its_margin(alice, mixed, settings):
    settings.PREDICTION_TIME_LIMIT, settings.PREDICTION_REAP_MARGIN = 35, 15
    stuck = job(
        alice, mixed, {}, status="running", attempts=1, started_at=timezone.now() - timedelta(seconds=51)
    )
    fresh = job(
        alice, mixed, {}, status="running", attempts=1, started_at=timezone.now() - timedelta(seconds=45)
    )
    assert ledger.reap() == 1
    stuck.refresh_from_db()
    fresh.refresh_from_db()
    assert stuck.status == "failed" and "Timed out" in stuck.error and stuck.finished_at
    assert "35 s" in stuck.error  # the user is told the limit their prediction ran into
    assert fresh.status == "running" and not fresh.charged
    assert usage_of(alice) == (1, 0, 0)
    assert ledger.reap() == 0  # reaped once, counted once
    assert usage_of(alice) == (1, 0, 0)


def test_the_reaper_fails_jobs_no_worker_started(alice, mixed, settings):
    settings.PREDICTION_QUEUED_MAX_SECONDS = 60
    old = job(alice, mixed, {})
    recent = job(alice, mixed, {})
    Prediction.objects.filter(id=old.id).update(created_at=timezone.now() - timedelta(seconds=61))
    assert ledger.reap() == 1
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.status == "failed" and "No worker" in old.error
    assert recent.status == "queued"
    assert usage_of(alice) == (1, 0, 0)


def test_a_reaped_job_whose_worker_comes_back_keeps_its_ending(alice, mixed, settings, run_job):
    settings.PREDICTION_QUEUED_MAX_SECONDS = 60
    prediction = job(alice, mixed, builders.mixed_inputs(batch=1))
    Prediction.objects.filter(id=prediction.id).update(created_at=timezone.now() - timedelta(seconds=61))
    assert ledger.reap() == 1
    run_job(prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == "failed" and "No worker" in prediction.error and prediction.attempts == 0
    assert usage_of(alice) == (1, 0, 0)
