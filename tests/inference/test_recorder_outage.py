"""Finished calls taken from Redis while PostgreSQL is down stay pending, and are written once it is back.

Real Redis (the suite's, under a prefix of this test's own), real PostgreSQL made unreachable by pointing the
connection at a closed port, the recorder's own function."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from inference.models import Prediction
from inference.recorder import record_finished
from inference.scheduling import queue
from portal.models import UsageDay
from tests.portal.test_outages import database_down

from . import builders

pytestmark = pytest.mark.django_db(transaction=True)

CONSUMER = "test-recorder"


@pytest.fixture
def own_queue(settings):
    # A prefix nobody else uses: the session worker's recorder must not write these records for us.
    settings.INFERENCE_REDIS_PREFIX = f"mp:recorder-outage-{uuid.uuid4().hex[:8]}:"
    queue.reset_client()
    yield
    queue.reset_client()


def finished_call(version, user) -> dict:
    now = time.time()
    header = queue.RequestHeader(
        id=str(uuid.uuid4()),
        user_id=user.id,
        api_key_id=None,
        source="api",
        bytes_in=12,
        created_at=now - 0.01,
        model_id=version.model_id,
        version_id=version.pk,
        sha256=version.sha256,
        format=version.format,
        file_name=version.file.name,
        size=version.size,
        inputs=["x"],
        outputs=["y"],
        batchable=True,
        model=str(version.model),
    ).as_dict()
    return {
        **header,
        "status": "succeeded",
        "error": "",
        "started_at": now - 0.005,
        "finished_at": now,
        "queue_ms": 5.0,
        "compute_ms": 1.0,
    }


def push_records(records: list[dict]) -> None:
    pipe = queue.client().pipeline(transaction=False)
    for record in records:
        queue.record_push(pipe, record, {"y": np.ones((1, 3), dtype=np.float32)})
    pipe.execute()


def test_records_that_cannot_be_written_go_back_and_are_written_once_later(own_queue, alice):
    version = builders.publish(owner=alice, name="plus", data=builders.mixed_onnx())
    records = [finished_call(version, alice) for _ in range(3)]
    push_records(records)

    with database_down(), pytest.raises(Exception) as failed:
        record_finished(CONSUMER)
    from django.db.utils import OperationalError

    assert isinstance(failed.value, OperationalError)
    assert queue.client().xlen(queue.records_key()) == 3  # all still there, none lost
    assert queue.records_pending()

    assert record_finished(CONSUMER) == 3
    ids = [record["id"] for record in records]
    assert Prediction.objects.filter(id__in=ids, status="succeeded").count() == 3
    assert not queue.records_pending()
    assert record_finished(CONSUMER) == 0  # nothing left to write twice
    assert Prediction.objects.filter(id__in=ids).count() == 3
    assert UsageDay.objects.get(user=alice).requests == 3


def test_records_not_written_are_taken_again_in_their_order(own_queue, alice):
    version = builders.publish(owner=alice, name="plus", data=builders.mixed_onnx())
    records = [finished_call(version, alice) for _ in range(4)]
    push_records(records)
    taken = [record.header["id"] for record in queue.records_take(CONSUMER)]
    assert taken == [record["id"] for record in records]
    push_records([finished_call(version, alice)])
    again = queue.records_take(CONSUMER)  # not acknowledged: given again, before anything newer
    assert [record.header["id"] for record in again] == taken
    queue.records_done([record.entry_id for record in again])
    assert len(queue.records_take(CONSUMER)) == 1
    assert queue.records_pending()  # taken, not written


def test_a_dead_recorders_records_are_taken_over(own_queue, alice):
    version = builders.publish(owner=alice, name="plus", data=builders.mixed_onnx())
    records = [finished_call(version, alice) for _ in range(2)]
    push_records(records)
    assert len(queue.records_take("a-worker-that-died")) == 2

    assert queue.records_reclaim(CONSUMER, idle_seconds=60) == 0  # maybe still writing them
    time.sleep(0.1)
    assert queue.records_reclaim(CONSUMER, idle_seconds=0.05) == 2
    assert record_finished(CONSUMER) == 2
    assert Prediction.objects.filter(id__in=[record["id"] for record in records]).count() == 2
    assert not queue.records_pending()


def test_a_record_whose_model_was_deleted_does_not_take_the_others_with_it(own_queue, alice):
    kept = builders.publish(owner=alice, name="kept", data=builders.mixed_onnx())
    deleted = builders.publish(owner=alice, name="deleted", data=builders.digits_onnx())
    records = [finished_call(kept, alice), finished_call(deleted, alice), finished_call(kept, alice)]
    push_records(records)
    deleted.model.delete()  # mid-flight: its call ended, its record is not written yet

    assert record_finished(CONSUMER) == 2
    written = set(Prediction.objects.values_list("id", flat=True))
    assert {str(i) for i in written} == {records[0]["id"], records[2]["id"]}
    assert UsageDay.objects.get(user=alice, version=kept).requests == 2
    assert not queue.records_pending()  # the bad one is dropped, not retried forever
    assert record_finished(CONSUMER) == 0
