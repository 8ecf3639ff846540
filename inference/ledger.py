"""The prediction ledger: the one home of the `Prediction` state machine and of its accounting.

    queued ──► running ──► succeeded | failed | canceled
       └──────────────────►  failed | canceled

Every status write goes through a function here. Each ends in a conditional UPDATE (`WHERE status IN (queued,
running)`) or an insert that yields to an existing row, so a prediction ends once, whoever races to end it
(worker, reaper, a cancel). Whatever ended, `_account` then claims the ended rows not yet counted
(`charged`) and hands them to portal's usage ledger: every admitted request is one record, counted once;
only a succeeded one costs compute. The same claim tells a prediction's webhook, if it has one, that it
ended (once); `job_running` tells it that it started (`webhooks.events_enqueue`).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from marketplace import files
from marketplace.services import models_record_runs
from portal.usage import Usage, usage_record

from . import webhooks
from .codec import datatype_of, encode_outputs_json, tensor_from_bytes, tensor_to_bytes
from .models import Prediction
from .scheduling.queue import RequestHeader

logger = logging.getLogger(__name__)

Status = Prediction.Status
ACTIVE = [Status.QUEUED, Status.RUNNING]
ENDED = [Status.SUCCEEDED, Status.FAILED, Status.CANCELED]


class NotCancelable(Exception):
    pass


@dataclass
class Ended:
    """How a prediction ended. `header` is set for interactive calls, whose row may not exist yet."""

    id: str
    status: str
    model_id: int
    header: RequestHeader | None = None
    outputs: dict[str, np.ndarray] | None = None
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    # Generative models: the tokens the call used (its `usage`).
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


# --- beginnings ---------------------------------------------------------------------------------------------


def _row(header: RequestHeader, **fields) -> Prediction:
    return Prediction(
        id=header.id,
        user_id=header.user_id,
        api_key_id=header.api_key_id,
        version_id=header.version_id,
        source=header.source,
        created_at=datetime.fromtimestamp(header.created_at, tz=UTC),
        bytes_in=header.bytes_in,
        **fields,
    )


def job_create(*, header: RequestHeader, tensors: dict[str, np.ndarray], webhook=None) -> Prediction:
    """A queued job: its inputs are kept until a worker runs it. `webhook`: a checked `webhooks.Webhook`."""
    extra = {"webhook": webhook.url, "webhook_events_filter": webhook.events} if webhook else {}
    prediction = _row(header, status=Status.QUEUED, inputs=inputs_to_json(tensors), **extra)
    prediction.save(force_insert=True)
    return prediction


def running_create(header: RequestHeader) -> None:
    """An interactive call a runner holds while its caller stops waiting: the worker's record completes it."""
    Prediction.objects.bulk_create(
        [_row(header, status=Status.RUNNING, started_at=timezone.now(), attempts=1)], ignore_conflicts=True
    )


def failed_create(header: RequestHeader, error: str) -> None:
    """An admitted request that never ran (nobody took it in time, or the queue went away)."""
    with transaction.atomic():
        Prediction.objects.bulk_create(
            [_row(header, status=Status.FAILED, error=error, finished_at=timezone.now())],
            ignore_conflicts=True,
        )
        _account([header.id])


def canceled_create(header: RequestHeader, error: str) -> None:
    """An interactive call whose caller left before its answer (a gRPC deadline or cancel). A record the
    runner pool pushes for it later (it was already running) finds it ended and leaves it so."""
    with transaction.atomic():
        Prediction.objects.bulk_create(
            [_row(header, status=Status.CANCELED, error=error, finished_at=timezone.now())],
            ignore_conflicts=True,
        )
        Prediction.objects.filter(id=header.id, status__in=ACTIVE).update(
            status=Status.CANCELED, error=error, finished_at=timezone.now()
        )
        _account([header.id])


def job_start(prediction_id) -> Prediction | None:
    """Claim a job to run (a redelivered one too); None if it already ended. It stays as it was (queued)
    until a runner takes it (`job_running`): a job waiting for a busy model's runner is not running yet, and
    the reaper's clock for running ones does not start."""
    claimed = Prediction.objects.filter(id=prediction_id, status__in=ACTIVE)
    if not claimed.update(attempts=F("attempts") + 1):
        return None
    return Prediction.objects.select_related("version__model").get(id=prediction_id)


def job_running(prediction: Prediction) -> datetime:
    """A runner took the job: it is running from now. Its webhook hears "start" on the first attempt."""
    now = timezone.now()
    started = Prediction.objects.filter(id=prediction.id, status__in=ACTIVE).update(
        status=Status.RUNNING, started_at=now
    )
    prediction.status, prediction.started_at = Status.RUNNING, now
    first = prediction.attempts == 1
    if started and first and prediction.webhook and "start" in prediction.webhook_events_filter:
        # The record as it starts (status running), whenever the delivery happens.
        webhooks.events_enqueue(prediction.id, ["start"], body=webhooks.prediction_record(prediction))
    return now


# --- endings ------------------------------------------------------------------------------------------------


def ended_from_record(record: dict, outputs: dict[str, np.ndarray]) -> Ended:
    """A finished interactive call as the supervisor pushed it onto the records list (`queue.record_push`)."""
    return Ended(
        id=record["id"],
        status=record["status"],
        model_id=record["model_id"],
        header=RequestHeader.from_dict(record),
        outputs=outputs if record["status"] == "succeeded" else None,
        error=record["error"],
        started_at=datetime.fromtimestamp(record["started_at"], tz=UTC) if record["started_at"] else None,
        finished_at=datetime.fromtimestamp(record["finished_at"], tz=UTC) if record["finished_at"] else None,
        queue_ms=record["queue_ms"],
        compute_ms=record["compute_ms"],
    )


def finish(ended: list[Ended]) -> None:
    """Record how predictions ended, in bulk: interactive calls are inserted, or complete their running row;
    jobs complete their row. A prediction that already ended (canceled, reaped) keeps its ending."""
    if not ended:
        return
    fields_by_id = {}
    for item in ended:
        outputs_json, outputs_file, bytes_out = _stored_outputs(item)
        fields_by_id[item.id] = {
            "status": item.status,
            "outputs": outputs_json,
            "outputs_file": outputs_file,
            "error": item.error,
            "started_at": item.started_at,
            "finished_at": item.finished_at or timezone.now(),
            "queue_ms": item.queue_ms,
            "compute_ms": item.compute_ms,
            "bytes_out": bytes_out,
            "prompt_tokens": item.prompt_tokens,
            "completion_tokens": item.completion_tokens,
        }
    model_of = {item.id: item.model_id for item in ended}
    with transaction.atomic():
        inserts = [_row(item.header, attempts=1, **fields_by_id[item.id]) for item in ended if item.header]
        if inserts:
            Prediction.objects.bulk_create(inserts, ignore_conflicts=True)
        # Rows that existed before (jobs, interactive calls whose caller stopped waiting) and are still
        # active.
        active = Prediction.objects.filter(id__in=list(fields_by_id), status__in=ACTIVE).values_list(
            "id", flat=True
        )
        for prediction_id in active:
            Prediction.objects.filter(id=prediction_id, status__in=ACTIVE).update(
                **fields_by_id[str(prediction_id)]
            )
        accounted = _account(list(fields_by_id))
        runs: dict[int, int] = {}
        for prediction_id, status in accounted:
            if status == Status.SUCCEEDED:
                model_id = model_of[str(prediction_id)]
                runs[model_id] = runs.get(model_id, 0) + 1
        models_record_runs(runs=runs)


def fail(prediction_id, error: str) -> bool:
    """End a queued or running prediction as failed; False if it had already ended."""
    with transaction.atomic():
        updated = Prediction.objects.filter(id=prediction_id, status__in=ACTIVE).update(
            status=Status.FAILED, error=error, finished_at=timezone.now()
        )
        _account([prediction_id])
    return bool(updated)


def cancel_if_active(prediction_id, error: str) -> bool:
    """Cancel a queued or running prediction; False if it had ended already."""
    with transaction.atomic():
        updated = Prediction.objects.filter(id=prediction_id, status__in=ACTIVE).update(
            status=Status.CANCELED, finished_at=timezone.now(), error=error
        )
        _account([prediction_id])
    return bool(updated)


def cancel(prediction: Prediction) -> Prediction:
    updated = cancel_if_active(prediction.id, "Canceled by the user.")
    prediction.refresh_from_db()
    if not updated:
        raise NotCancelable(
            f"This prediction already {prediction.status}; only queued or running ones can be canceled."
        )
    return prediction


def reap() -> int:
    """Fail what no worker will finish: running past the time limit (plus a margin), out of attempts, or
    queued too long."""
    now = timezone.now()
    limit = settings.PREDICTION_TIME_LIMIT + settings.PREDICTION_REAP_MARGIN
    endings = [
        (
            Prediction.objects.filter(status=Status.RUNNING, started_at__lt=now - timedelta(seconds=limit)),
            f"Timed out: still running after {limit:g} s (the time limit is "
            f"{settings.PREDICTION_TIME_LIMIT:g} s); its worker was lost or the model ran too long.",
        ),
        (
            Prediction.objects.filter(
                status=Status.QUEUED,
                created_at__lt=now - timedelta(seconds=settings.PREDICTION_QUEUED_MAX_SECONDS),
            ),
            "No worker started this prediction in time.",
        ),
    ]
    count = 0
    for queryset, error in endings:
        with transaction.atomic():
            ids = list(queryset.select_for_update(skip_locked=True).values_list("id", flat=True)[:1000])
            if not ids:
                continue
            count += Prediction.objects.filter(id__in=ids, status__in=ACTIVE).update(
                status=Status.FAILED, finished_at=now, error=error
            )
            _account(ids)
    if count:
        logger.warning("reaper marked %d predictions failed", count)
    return count


def _account(ids: list) -> list[tuple]:
    """Claim the ended, not yet counted rows among `ids` and add them to the usage ledger, once each.

    One `UPDATE … SET charged = true WHERE NOT charged AND status IN (ended) … RETURNING …`: whoever ends a
    prediction claims it, and a redelivered or repeated ending claims nothing."""
    if not ids:
        return []
    quote = connection.ops.quote_name
    pk = Prediction._meta.pk
    id_values = [pk.get_db_prep_value(pk.to_python(value), connection) for value in ids]
    table = quote(Prediction._meta.db_table)
    columns = ["id", "status", "user_id", "api_key_id", "version_id", "created_at", "compute_ms"]
    columns += [
        "bytes_in",
        "bytes_out",
        "prompt_tokens",
        "completion_tokens",
        "webhook",
        "webhook_events_filter",
    ]
    returning = ", ".join(quote(column) for column in columns)
    id_list, status_list = ", ".join(["%s"] * len(id_values)), ", ".join(["%s"] * len(ENDED))
    # Table and column names come from the model; every value is a parameter.
    sql = (
        f"UPDATE {table} SET {quote('charged')} = %s WHERE {quote('id')} IN ({id_list}) "  # noqa: S608
        f"AND {quote('charged')} = %s AND {quote('status')} IN ({status_list}) RETURNING {returning}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [True, *id_values, False, *ENDED])
        rows = cursor.fetchall()
    usages = []
    for row in rows:
        _id, status, user_id, api_key_id, version_id, created_at, compute_ms, bytes_in, bytes_out = row[:9]
        prompt_tokens, completion_tokens = row[9] or 0, row[10] or 0
        if row[11]:  # a webhook: nearly never, and then it is told how the prediction ended
            _webhook_ended(_id, status, row[12])
        if isinstance(created_at, str):  # SQLite returns text from RETURNING
            created_at = datetime.fromisoformat(created_at)
        if timezone.is_naive(created_at):
            created_at = created_at.replace(tzinfo=UTC)
        usages.append(
            Usage(
                user_id=user_id,
                api_key_id=api_key_id,
                version_id=version_id,
                day=created_at.astimezone(UTC).date(),
                succeeded=status == Status.SUCCEEDED,
                compute_ms=compute_ms or 0.0,
                bytes_in=bytes_in or 0,
                bytes_out=bytes_out or 0,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
        )
    usage_record(usages)
    # As str(UUID): PostgreSQL returns UUIDs, SQLite (make run) the 32 hex digits it stores.
    return [(str(uuid.UUID(str(row[0]))), row[1]) for row in rows]


def _webhook_ended(prediction_id, status: str, events) -> None:
    if isinstance(events, str):  # SQLite returns JSON as text from RETURNING
        events = json.loads(events)
    wanted = webhooks.events_of_ending(status=status, events=events or [])
    if wanted:
        webhooks.events_enqueue(uuid.UUID(str(prediction_id)), wanted)


# --- tensors at rest ----------------------------------------------------------------------------------------


def _stored_outputs(item: Ended) -> tuple[list | None, str, int]:
    if item.outputs is None or item.status != Status.SUCCEEDED:
        return None, "", 0
    encoded = encode_outputs_json(item.outputs)
    raw = json.dumps(encoded, separators=(",", ":")).encode()
    if len(raw) <= settings.PREDICTION_INLINE_OUTPUT_BYTES:
        return encoded, "", len(raw)
    name = files.save_bytes(f"predictions/{item.id}.json", raw)
    return None, name, len(raw)


def inputs_to_json(tensors: dict[str, np.ndarray]) -> list[dict]:
    return [
        {
            "name": name,
            "datatype": datatype_of(array),
            "shape": list(array.shape),
            "base64": base64.b64encode(tensor_to_bytes(array)).decode(),
        }
        for name, array in tensors.items()
    ]


def inputs_from_json(stored: list[dict]) -> dict[str, np.ndarray]:
    return {
        t["name"]: tensor_from_bytes(base64.b64decode(t["base64"]), t["datatype"], t["shape"], t["name"])
        for t in stored
    }
