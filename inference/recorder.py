"""The recorder: `python -m inference.recorder`, started and watched by a worker's supervisor.

It writes finished interactive calls from the Redis stream of records to the ledger in bulk, and runs the
reapers: predictions left running, and uploads whose validation task was lost. Building a few hundred rows a
second is real CPU: in the supervisor's process it contended for the GIL with threads that feed the runners
(64 % of that process's CPU in a profile), so it has a trusted process of its own. It exits with its
supervisor.

Exactly once through crashes: a batch is acknowledged only after its transaction commits, so a recorder killed
mid-batch leaves it pending, and the next recorder of the same supervisor (the same consumer name) writes it
first; the ledger's finish() inserts and counts nothing twice, so a batch committed but not acknowledged costs
nothing when written again. What a dead worker's recorder held is taken over after `RECLAIM_AFTER_SECONDS`.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta

logger = logging.getLogger("inference.recorder")


BATCH = 500
# Longer than any batch takes to write: a live recorder's batch is taken over only if it is stuck (and then
# written twice, harmlessly).
RECLAIM_AFTER_SECONDS = 60


def consumer_name(parent: int) -> str:
    """One name per supervisor: a recorder it restarts after a crash finds its predecessor's batch."""
    return f"{socket.gethostname()}:{parent}"


def record_finished(consumer: str) -> int:
    """Write what the runners answered, in bulk: one INSERT for every call finished since last time.

    A full batch is followed by the next at once; a partial one ends the turn, and the next turn comes after
    `INFERENCE_RECORD_INTERVAL`. Taking whatever arrived while the last batch was written instead kept the
    recorder busy with batches of a few rows under load, each paying every statement's cost again."""
    from portal.outages import outage_of

    from . import ledger
    from .scheduling import queue

    written = 0
    full = True
    while full and (records := queue.records_take(consumer, BATCH)):
        full = len(records) == BATCH
        try:
            ledger.finish([ledger.ended_from_record(record.header, record.outputs) for record in records])
        except Exception as exc:
            # PostgreSQL is down: the batch stays pending, and the next turn reads it again.
            if outage_of(exc) is not None:
                raise
            # A record that cannot be written (its model or user deleted mid-flight) must not take the
            # others with it: one at a time, each in its own transaction.
            written += _record_each(records)
        else:
            queue.records_done([record.entry_id for record in records])
            written += len(records)
    return written


def _record_each(records) -> int:
    from portal.outages import outage_of

    from . import ledger
    from .scheduling import queue

    written = 0
    done = []
    try:
        for record in records:
            try:
                ledger.finish([ledger.ended_from_record(record.header, record.outputs)])
                written += 1
            except Exception as exc:
                if outage_of(exc) is not None:
                    raise
                logger.error(
                    "dropped the record of prediction %s, which cannot be written: %s",
                    record.header.get("id"),
                    exc,
                )
            done.append(record.entry_id)
    finally:
        queue.records_done(done)
    return written


def serve(parent: int) -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from marketplace.services import validations_resume

    from . import ledger
    from .scheduling import queue

    consumer = consumer_name(parent)
    next_reap = 0.0
    while os.getppid() == parent:
        now = time.monotonic()
        try:
            close_old_connections()
            if queue.enabled():
                record_finished(consumer)
            if now >= next_reap:
                next_reap = now + settings.PREDICTION_REAPER_INTERVAL
                if queue.enabled():
                    queue.records_reclaim(consumer, RECLAIM_AFTER_SECONDS)
                ledger.reap()
                validations_resume(older_than=timedelta(seconds=settings.MODEL_VALIDATION_LOST_AFTER_SECONDS))
        except Exception:
            logger.exception("recorder")
            time.sleep(1)
        time.sleep(settings.INFERENCE_RECORD_INTERVAL)


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    serve(os.getppid())


if __name__ == "__main__":
    main()
