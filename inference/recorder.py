"""The recorder: `python -m inference.recorder`, started and watched by a worker's supervisor.

It writes finished interactive calls from the Redis `records` list to the ledger in bulk, and runs the
reapers: predictions left running, and uploads whose validation task was lost. Building a few hundred rows a
second is real CPU: in the supervisor's process it contended for the GIL with threads that feed the runners
(64 % of that process's CPU in a profile), so it has a trusted process of its own. It exits with its
supervisor.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import timedelta

logger = logging.getLogger("inference.recorder")


BATCH = 500


def record_finished() -> int:
    """Write what the runners answered, in bulk: one INSERT for every call finished since last time.

    A full batch is followed by the next at once; a partial one ends the turn, and the next turn comes after
    `INFERENCE_RECORD_INTERVAL`. Taking whatever arrived while the last batch was written instead kept the
    recorder busy with batches of a few rows under load, each paying every statement's cost again."""
    from portal.outages import outage_of

    from . import ledger, queue

    written = 0
    full = True
    while full and (records := queue.records_take(BATCH)):
        full = len(records) == BATCH
        try:
            ledger.finish([ledger.ended_from_record(header, outputs) for header, outputs in records])
            written += len(records)
        except BaseException as exc:
            # PostgreSQL is down (or the process is stopping): the records go back, to be written later.
            if outage_of(exc) is not None or not isinstance(exc, Exception):
                queue.records_put_back(records)
                raise
            # A record that cannot be written (its model or user deleted mid-flight) must not take the
            # others with it: one at a time, each in its own transaction (a row written twice is ignored).
            written += _record_each(records)
        finally:
            queue.records_done()
    return written


def _record_each(records) -> int:
    from portal.outages import outage_of

    from . import ledger, queue

    written = 0
    for position, (header, outputs) in enumerate(records):
        try:
            ledger.finish([ledger.ended_from_record(header, outputs)])
            written += 1
        except Exception as exc:
            if outage_of(exc) is not None:
                queue.records_put_back(records[position:])
                raise
            logger.error(
                "dropped the record of prediction %s, which cannot be written: %s", header.get("id"), exc
            )
    return written


def serve(parent: int) -> None:
    from django.conf import settings
    from django.db import close_old_connections

    from marketplace.services import validations_resume

    from . import ledger, queue

    next_reap = 0.0
    while os.getppid() == parent:
        now = time.monotonic()
        try:
            close_old_connections()
            if queue.enabled():
                record_finished()
            if now >= next_reap:
                next_reap = now + settings.PREDICTION_REAPER_INTERVAL
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
