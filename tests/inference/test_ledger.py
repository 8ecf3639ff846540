"""The ledger: every admitted request is counted once in the usage ledger, however often and by whom it is
ended; only a succeeded one costs compute; one UsageDay row per key, version and day."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone

from inference import ledger
from inference.models import Prediction
from inference.scheduling.queue import RequestHeader
from portal.models import UsageDay
from portal.quotas import compute_used_ms

from . import builders


def header(user, version, *, api_key=None, days_ago=0, bytes_in=100) -> RequestHeader:
    return RequestHeader(
        id=str(uuid.uuid4()),
        user_id=user.id,
        api_key_id=api_key.id if api_key else None,
        source="api",
        bytes_in=bytes_in,
        created_at=time.time() - days_ago * 86400,
        model_id=version.model_id,
        version_id=version.id,
        sha256=version.sha256,
        format=version.format,
        file_name=version.file.name,
        size=version.size,
        inputs=["x"],
        outputs=["y"],
        batchable=True,
    )


def ended(request: RequestHeader, *, status="succeeded", compute_ms=1500.0, interactive=True) -> ledger.Ended:
    return ledger.Ended(
        id=request.id,
        status=status,
        model_id=request.model_id,
        header=request if interactive else None,
        outputs={"y": np.ones((1, 3), dtype=np.float32)} if status == "succeeded" else None,
        error="" if status == "succeeded" else "the model failed",
        started_at=timezone.now(),
        finished_at=timezone.now(),
        queue_ms=1.0,
        compute_ms=compute_ms,
    )


def usage(user) -> tuple:
    row = UsageDay.objects.get(user=user)
    return row.requests, row.succeeded, row.compute_ms


@pytest.fixture
def api_key(alice):
    from portal.models import ApiKey

    return ApiKey.issue(user=alice, name="ledger", scopes=["predict"])[0]


@pytest.mark.django_db
class TestOncePerPrediction:
    def test_an_interactive_call_is_recorded_and_counted(self, alice, mixed, api_key):
        request = header(alice, mixed, api_key=api_key)
        ledger.finish([ended(request)])
        prediction = Prediction.objects.get(id=request.id)
        assert prediction.status == "succeeded" and prediction.charged and prediction.attempts == 1
        assert prediction.api_key == api_key and prediction.bytes_out > 0
        row = UsageDay.objects.get(user=alice)
        assert (row.requests, row.succeeded, row.compute_ms) == (1, 1, 1500.0)
        assert (row.api_key, row.version, row.bytes_in, row.bytes_out) == (
            api_key,
            mixed,
            100,
            prediction.bytes_out,
        )
        assert compute_used_ms(alice) == 1500
        mixed.model.refresh_from_db()
        assert mixed.model.runs == 1

    def test_a_redelivered_record_is_not_counted_twice(self, alice, mixed):
        request = header(alice, mixed)
        ledger.finish([ended(request)])
        ledger.finish([ended(request, compute_ms=9999.0)])  # the supervisor wrote it, then died before acking
        assert usage(alice) == (1, 1, 1500.0) and compute_used_ms(alice) == 1500
        assert Prediction.objects.get(id=request.id).compute_ms == 1500.0  # the first ending stands
        mixed.model.refresh_from_db()
        assert mixed.model.runs == 1

    def test_a_call_whose_caller_stopped_waiting_is_completed_and_counted_once(self, alice, mixed):
        request = header(alice, mixed)
        ledger.running_create(request)
        assert not UsageDay.objects.exists()  # running: not counted yet
        ledger.finish([ended(request)])
        ledger.running_create(request)  # the web's late insert yields to the record
        prediction = Prediction.objects.get(id=request.id)
        assert prediction.status == "succeeded" and prediction.outputs is not None
        assert usage(alice) == (1, 1, 1500.0)

    def test_a_job_ended_twice_keeps_its_first_ending_and_one_count(self, alice, mixed):
        request = header(alice, mixed)
        ledger.job_create(header=request, tensors={"x": np.ones((1, 3), dtype=np.float32)})
        claimed = ledger.job_start(request.id)
        assert claimed.status == "queued" and claimed.attempts == 1  # queued until a runner takes it
        ledger.job_running(claimed)
        assert Prediction.objects.get(id=request.id).status == "running"
        ledger.finish([ended(request, interactive=False)])
        assert ledger.fail(request.id, "lost") is False
        ledger.finish([ended(request, status="failed", interactive=False)])
        assert ledger.job_start(request.id) is None  # a redelivered task does not run it again
        assert Prediction.objects.get(id=request.id).status == "succeeded"
        assert usage(alice) == (1, 1, 1500.0)

    @pytest.mark.parametrize("status", ["failed", "canceled"])
    def test_a_failure_or_cancel_counts_a_request_but_no_compute(self, alice, mixed, status):
        request = header(alice, mixed)
        ledger.finish([ended(request, status=status, compute_ms=30000.0)])
        assert usage(alice) == (1, 0, 0)
        assert compute_used_ms(alice) == 0
        mixed.model.refresh_from_db()
        assert mixed.model.runs == 0

    def test_a_canceled_job_counts_once_and_a_late_result_does_not_change_it(self, alice, mixed):
        request = header(alice, mixed)
        prediction = ledger.job_create(header=request, tensors={"x": np.ones((1, 3), dtype=np.float32)})
        ledger.cancel(prediction)
        with pytest.raises(ledger.NotCancelable, match="already canceled"):
            ledger.cancel(prediction)
        ledger.finish([ended(request, interactive=False)])
        assert Prediction.objects.get(id=request.id).status == "canceled"
        assert usage(alice) == (1, 0, 0) and compute_used_ms(alice) == 0

    def test_a_request_that_never_ran_counts_once_without_compute(self, alice, mixed):
        request = header(alice, mixed)
        ledger.failed_create(request, "No worker answered in time; retry later.")
        ledger.failed_create(request, "again")
        prediction = Prediction.objects.get(id=request.id)
        assert prediction.status == "failed" and prediction.error.startswith("No worker")
        assert usage(alice) == (1, 0, 0)

    def test_queued_and_running_predictions_are_not_counted(self, alice, mixed):
        queued, running = header(alice, mixed), header(alice, mixed)
        ledger.job_create(header=queued, tensors={"x": np.ones((1, 3), dtype=np.float32)})
        ledger.running_create(running)
        ledger._account([queued.id, running.id])
        assert not UsageDay.objects.exists()
        assert not Prediction.objects.filter(charged=True).exists()

    def test_a_reaped_prediction_is_counted_once(self, alice, mixed, settings):
        settings.PREDICTION_TIME_LIMIT, settings.PREDICTION_REAP_MARGIN = 30, 15
        request = header(alice, mixed)
        ledger.running_create(request)
        Prediction.objects.filter(id=request.id).update(started_at=timezone.now() - timedelta(seconds=60))
        assert ledger.reap() == 1
        ledger.finish([ended(request)])  # the runner answers after all
        assert ledger.reap() == 0
        assert Prediction.objects.get(id=request.id).status == "failed"
        assert usage(alice) == (1, 0, 0)


@pytest.mark.django_db
def test_one_usage_row_per_key_version_and_day(alice, mixed, api_key):
    other = builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
    today = timezone.now().date()
    ledger.finish([ended(header(alice, mixed)), ended(header(alice, mixed, api_key=api_key))])
    ledger.finish([ended(header(alice, mixed)), ended(header(alice, mixed, days_ago=1))])
    ledger.finish([ended(header(alice, other)), ended(header(alice, mixed), status="failed")])
    rows = {(r.api_key_id, r.version_id, r.day): (r.requests, r.succeeded) for r in UsageDay.objects.all()}
    assert rows == {
        (None, mixed.id, today): (3, 2),
        (api_key.id, mixed.id, today): (1, 1),
        (None, mixed.id, today - timedelta(days=1)): (1, 1),
        (None, other.id, today): (1, 1),
    }
    assert compute_used_ms(alice) == 5 * 1500


@pytest.mark.django_db(transaction=True)
def test_racing_endings_count_a_prediction_once(alice, mixed):
    """The worker's result, the reaper and a cancel end the same jobs at once: one ending, one count each."""
    requests = [header(alice, mixed) for _ in range(8)]
    predictions = [
        ledger.job_create(header=request, tensors={"x": np.ones((1, 3), dtype=np.float32)})
        for request in requests
    ]
    for request in requests:
        ledger.job_start(request.id)
    barrier = threading.Barrier(3)
    errors = []

    def end(how) -> None:
        try:
            barrier.wait(10)
            for request, prediction in zip(requests, predictions, strict=True):
                try:
                    how(request, prediction)
                except ledger.NotCancelable:
                    pass
        except Exception as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)
        finally:
            connection.close()

    ways = [
        lambda request, _: ledger.finish([ended(request, interactive=False)]),
        lambda request, _: ledger.fail(request.id, "The worker running this prediction stopped answering."),
        lambda _, prediction: ledger.cancel(prediction),
    ]
    threads = [threading.Thread(target=end, args=(how,)) for how in ways]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    statuses = list(Prediction.objects.values_list("status", flat=True))
    assert len(statuses) == 8 and set(statuses) <= {"succeeded", "failed", "canceled"}
    assert Prediction.objects.filter(charged=True).count() == 8
    row = UsageDay.objects.get(user=alice)
    succeeded = statuses.count("succeeded")
    assert (row.requests, row.succeeded, row.compute_ms) == (8, succeeded, 1500.0 * succeeded)
    mixed.model.refresh_from_db()
    assert mixed.model.runs == succeeded
