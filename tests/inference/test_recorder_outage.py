"""Finished calls taken from Redis while PostgreSQL is down go back, and are written once it is back.

Real Redis (the suite's, under a prefix of this test's own), real PostgreSQL made unreachable by pointing the
connection at a closed port, the recorder's own function."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from inference import queue
from inference.models import Prediction
from inference.recorder import record_finished
from tests.portal.test_outages import database_down

from . import builders

pytestmark = pytest.mark.django_db(transaction=True)


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
        record_finished()
    from django.db.utils import OperationalError

    assert isinstance(failed.value, OperationalError)
    assert queue.client().llen(queue.key("records")) == 3  # all back, none lost
    assert queue.records_pending()

    assert record_finished() == 3
    ids = [record["id"] for record in records]
    assert Prediction.objects.filter(id__in=ids, status="succeeded").count() == 3
    assert not queue.records_pending()
    assert record_finished() == 0  # nothing left to write twice
    assert Prediction.objects.filter(id__in=ids).count() == 3


def test_records_go_back_in_their_order(own_queue, alice):
    version = builders.publish(owner=alice, name="plus", data=builders.mixed_onnx())
    records = [finished_call(version, alice) for _ in range(4)]
    push_records(records)
    taken = queue.records_take()
    queue.records_put_back(taken)
    queue.records_done()
    again = queue.records_take()
    queue.records_done()
    assert [header["id"] for header, _ in again] == [record["id"] for record in records]


def test_a_record_whose_model_was_deleted_does_not_take_the_others_with_it(own_queue, alice):
    kept = builders.publish(owner=alice, name="kept", data=builders.mixed_onnx())
    deleted = builders.publish(owner=alice, name="deleted", data=builders.digits_onnx())
    records = [finished_call(kept, alice), finished_call(deleted, alice), finished_call(kept, alice)]
    push_records(records)
    deleted.model.delete()  # mid-flight: its call ended, its record is not written yet

    assert record_finished() == 2
    written = set(Prediction.objects.values_list("id", flat=True))
    assert {str(i) for i in written} == {records[0]["id"], records[2]["id"]}
    assert not queue.records_pending()
    assert record_finished() == 0
