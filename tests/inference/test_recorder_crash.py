"""A recorder killed with `kill -9` mid-batch loses and doubles nothing: the next one writes that batch again.

Real Redis and PostgreSQL, real recorder processes (`python -m inference.recorder`, children of this test,
so they run while it does and share a consumer name, as the recorders one supervisor restarts do), records
under a Redis prefix of this test's own. A trigger on the Prediction table holds the second batch in
PostgreSQL for a few seconds (`pg_sleep`), so the kill lands inside it: while its INSERT runs (nothing of it
committed), or while its COMMIT runs (committed, never acknowledged)."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from django.db import connection
from django.db.models import Sum

from inference.models import Prediction
from inference.recorder import BATCH
from inference.scheduling import queue
from marketplace.models import Model
from portal.models import UsageDay
from tests.conftest import ChildProcess

from . import builders
from .test_recorder_outage import finished_call, push_records

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HOLD_SECONDS = 3


@pytest.fixture
def own_queue(settings):
    settings.INFERENCE_REDIS_PREFIX = f"mp:recorder-crash-{uuid.uuid4().hex[:8]}:"
    queue.reset_client()
    yield settings.INFERENCE_REDIS_PREFIX
    queue.reset_client()


@pytest.fixture
def recorders(own_queue, tmp_path):
    started: list[ChildProcess] = []

    def start() -> ChildProcess:
        recorder = ChildProcess(tmp_path / f"recorder-{len(started)}.log")
        recorder.spawn(["inference.recorder"], extra_environ={"INFERENCE_REDIS_PREFIX": own_queue})
        started.append(recorder)
        return recorder

    yield start
    for recorder in started:
        recorder.stop()


@pytest.fixture
def hold_in_database():
    """hold(prediction_id, at_commit=...): the transaction that inserts that prediction sleeps, after its
    INSERT or during its COMMIT (a deferred constraint trigger runs as the transaction commits)."""
    table = connection.ops.quote_name(Prediction._meta.db_table)

    def hold(prediction_id: str, *, at_commit: bool) -> None:
        kind = "CONSTRAINT TRIGGER" if at_commit else "TRIGGER"
        deferred = "DEFERRABLE INITIALLY DEFERRED" if at_commit else ""
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE OR REPLACE FUNCTION test_hold() RETURNS trigger LANGUAGE plpgsql AS "
                f"$$ BEGIN PERFORM pg_sleep({HOLD_SECONDS}); RETURN NULL; END $$"
            )
            cursor.execute(
                f"CREATE {kind} test_hold AFTER INSERT ON {table} {deferred} FOR EACH ROW "  # noqa: S608
                f"WHEN (NEW.id = '{uuid.UUID(prediction_id)}'::uuid) EXECUTE FUNCTION test_hold()"
            )

    yield hold
    with connection.cursor() as cursor:  # outlives the flush between tests otherwise
        cursor.execute(f"DROP TRIGGER IF EXISTS test_hold ON {table}")
        cursor.execute("DROP FUNCTION IF EXISTS test_hold()")


def wait_for(condition, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, message
        time.sleep(0.05)
    return result


def sleeping_in_the_database() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event = 'PgSleep' AND datname = current_database()"
        )
        return cursor.fetchone()[0] > 0


@pytest.mark.parametrize("at_commit", [False, True], ids=["while-inserting", "after-committing"])
def test_a_recorder_killed_mid_batch_loses_and_doubles_nothing(recorders, hold_in_database, alice, at_commit):
    version = builders.publish(owner=alice, name="plus", data=builders.mixed_onnx())
    records = [finished_call(version, alice) for _ in range(2 * BATCH + 200)]
    push_records(records)
    hold_in_database(records[BATCH + 100]["id"], at_commit=at_commit)

    first = recorders()
    wait_for(sleeping_in_the_database, 60, f"the recorder never reached the second batch:\n{first.log()}")
    if at_commit:
        # Stopped before it hears that the COMMIT it sent succeeded: its batch is written, not acknowledged.
        os.kill(first.process.pid, signal.SIGSTOP)
        wait_for(lambda: Prediction.objects.count() == 2 * BATCH, 30, "the held batch was never committed")
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(10)
    assert Prediction.objects.count() == (2 if at_commit else 1) * BATCH
    assert queue.client().xlen(queue.records_key()) == BATCH + 200  # the killed batch is still there

    second = recorders()
    wait_for(lambda: not queue.records_pending(), 60, f"the records were never written:\n{second.log()}")
    ids = {record["id"] for record in records}
    assert {str(i) for i in Prediction.objects.values_list("id", flat=True)} == ids
    assert Prediction.objects.filter(status="succeeded", charged=True).count() == len(records)
    usage = UsageDay.objects.filter(user=alice).aggregate(
        requests=Sum("requests"), succeeded=Sum("succeeded")
    )
    assert usage == {"requests": len(records), "succeeded": len(records)}
    assert Model.objects.get(pk=version.model_id).runs == len(records)
