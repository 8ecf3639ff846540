"""Running models: admitting a request (the web's one entry), running jobs, recording results, cancel, reaper.

Two hook points for quotas and usage:
- `prediction_submit` is the only place the web admits a prediction, before anything is queued or run.
- `predictions_record` is the only place the worker records finished predictions (in bulk): compute is charged
  there.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from marketplace.models import Model, ModelVersion, Visibility
from portal.quotas import admit_prediction, charge_finished

from . import interactive
from .codec import encode_outputs_json, tensor_from_bytes, tensor_to_bytes, top_classes
from .models import Prediction
from .runtimes import RuntimeFailure, VersionRef, runtime_for

logger = logging.getLogger(__name__)


class VersionNotFound(LookupError):
    pass


# --- looking up what to run (cached: the hot path must not query the catalog on every request) --------------


@dataclass(frozen=True)
class Target:
    """A ready version of a model, with what the web needs to admit a request for it."""

    model_id: int
    owner_id: int
    slug: str
    visibility: str
    task: str
    labels: list
    preprocessing: dict
    number: int
    versions: list[int]
    ref: VersionRef

    def visible_to(self, user) -> bool:
        if self.visibility == Visibility.PUBLIC:
            return True
        return user is not None and user.is_authenticated and (user.is_staff or user.id == self.owner_id)


_targets: dict[tuple, tuple[float, Target | None]] = {}
_targets_lock = threading.Lock()


def target_find(*, owner: str, name: str, number: int | None, user) -> Target:
    """The ready version `number` (or the latest ready one) of owner/name, if `user` may see the model."""
    key = (owner, name.lower(), number)
    now = time.monotonic()
    cached = _targets.get(key)
    if cached is None or cached[0] < now:
        target = _target_load(owner=owner, name=name, number=number)
        with _targets_lock:
            _targets[key] = (now + settings.INFERENCE_LOOKUP_CACHE_SECONDS, target)
    else:
        target = cached[1]
    if target is None or not target.visible_to(user):
        raise VersionNotFound(
            f"No model {owner}/{name}" + (f" version {number}" if number else "") + " to run."
        )
    return target


def _target_load(*, owner: str, name: str, number: int | None) -> Target | None:
    model = Model.objects.select_related("owner").filter(owner__username=owner, name__iexact=name).first()
    if model is None:
        return None
    ready = list(model.versions.filter(status=ModelVersion.Status.READY).order_by("-number"))
    if not ready:
        return None
    version = ready[0] if number is None else next((v for v in ready if v.number == number), None)
    if version is None:
        return None
    return Target(
        model_id=model.id,
        owner_id=model.owner_id,
        slug=model.slug,
        visibility=model.visibility,
        task=model.task,
        labels=list(model.labels or []),
        preprocessing=dict(model.preprocessing or {}),
        number=version.number,
        versions=sorted(v.number for v in ready),
        ref=version_ref(version),
    )


_refs: dict[int, VersionRef] = {}


def version_ref_cached(*, version_id: int) -> VersionRef:
    """Versions are immutable: a worker looks each one up once. Only ready versions are ever opened."""
    ref = _refs.get(version_id)
    if ref is None:
        version = ModelVersion.objects.filter(id=version_id, status=ModelVersion.Status.READY).first()
        if version is None:
            raise RuntimeFailure("this model version is not ready to run")
        ref = _refs[version_id] = version_ref(version)
    return ref


def version_ref(version: ModelVersion) -> VersionRef:
    return VersionRef(
        version_id=version.id,
        sha256=version.sha256,
        format=version.format,
        file_name=version.file.name,
        size=version.size,
        signature=version.signature or {},
    )


# --- admission ----------------------------------------------------------------------------------------------


@dataclass
class Submission:
    """A prediction on its way: either a job (`prediction` is its row) or an interactive call (`call`)."""

    id: uuid.UUID
    target: Target
    created_at: datetime
    started: float
    prediction: Prediction | None = None
    call: interactive.PendingCall | None = None
    header: dict = field(default_factory=dict)
    tensors: dict = field(default_factory=dict)


def prediction_submit(
    *,
    user,
    api_key,
    target: Target,
    inputs: dict[str, np.ndarray],
    source: str,
    bytes_in: int,
    asynchronous: bool = False,
) -> Submission:
    """Admit one prediction (inputs already checked against the signature) and queue it.

    Interactive calls go to the worker over Redis when it is configured (no database write here); jobs,
    and every call when Redis is not configured, get a `Prediction` row and a Celery task.
    """
    # Quotas and rate limits: counts the request or raises QuotaExceeded (429) before anything is queued.
    admit_prediction(user=user, api_key=api_key)
    submission = Submission(
        id=uuid.uuid4(), target=target, created_at=timezone.now(), started=time.monotonic()
    )
    header = {
        "id": str(submission.id),
        "user_id": user.id,
        "api_key_id": getattr(api_key, "id", None),
        "source": source,
        "bytes_in": bytes_in,
        "created_at": submission.created_at.timestamp(),
        "model_id": target.model_id,
        "version_id": target.ref.version_id,
        "sha256": target.ref.sha256,
    }
    submission.header, submission.tensors = header, inputs
    if not asynchronous and interactive.enabled():
        try:
            submission.call = interactive.submit(header=header, tensors=inputs, queue=target.ref.sha256)
            return submission
        except interactive.NoConsumer:
            pass  # no worker is serving interactive calls now: the job path waits for one
    submission.prediction = _job_create(submission=submission, user=user, api_key=api_key)
    return submission


def _job_create(
    *, submission: Submission, user, api_key, status: str = Prediction.Status.QUEUED
) -> Prediction:
    prediction = Prediction.objects.create(
        id=submission.id,
        user=user,
        api_key=api_key,
        version_id=submission.target.ref.version_id,
        source=submission.header["source"],
        status=status,
        inputs=inputs_to_json(submission.tensors),
        created_at=submission.created_at,
        bytes_in=submission.header["bytes_in"],
    )
    transaction.on_commit(lambda: job_enqueue(prediction_id=prediction.id))
    return prediction


def job_enqueue(*, prediction_id) -> None:
    from .tasks import run_prediction

    try:
        run_prediction.apply_async(
            kwargs={"prediction_id": str(prediction_id)}, queue=settings.INFERENCE_JOB_QUEUE
        )
    except Exception as exc:  # the broker's errors vary by transport
        logger.exception("could not queue prediction %s", prediction_id)
        prediction_fail(prediction_id=prediction_id, error="The task queue was unavailable; not run.")
        raise interactive.Unavailable("The task queue is unavailable; retry.") from exc


@dataclass
class Outcome:
    """What a caller waiting on a submission gets: a finished prediction's fields, or `pending`."""

    status: str
    outputs: dict[str, np.ndarray] | None = None
    outputs_json: list | None = None
    error: str = ""
    unavailable: bool = False
    compute_ms: float | None = None


def prediction_wait(
    *, submission: Submission, timeout: float, fall_back_to_job: bool, user, api_key
) -> Outcome:
    """Wait up to `timeout` s for the result.

    Not done by then: `pending` (the record then exists, as a job or a running row the worker completes)
    if `fall_back_to_job`, else `unavailable` (a 503)."""
    if submission.call is not None:
        try:
            reply = interactive.wait(submission.call, timeout)
        except interactive.Unavailable as exc:
            return Outcome(status="pending", unavailable=True, error=str(exc))
        if reply is not None:
            header, outputs = reply
            if header["status"] == Prediction.Status.SUCCEEDED:
                return Outcome(status=header["status"], outputs=outputs, compute_ms=header.get("compute_ms"))
            return Outcome(
                status=header["status"], error=header["error"], unavailable=header.get("unavailable", False)
            )
        taken = not interactive.withdraw(submission.call)
        if not fall_back_to_job:
            return Outcome(
                status="pending", unavailable=True, error="No worker answered in time; retry later."
            )
        try:
            _record_pending_call(submission=submission, taken=taken, user=user, api_key=api_key)
        except interactive.Unavailable as exc:
            return Outcome(status="pending", unavailable=True, error=str(exc))
        return Outcome(status="pending")
    return _poll_job(prediction_id=submission.prediction.id, timeout=timeout)


def _record_pending_call(*, submission: Submission, taken: bool, user, api_key) -> None:
    with transaction.atomic():
        if taken:
            # A worker holds it: a running row it will complete, or the reaper will fail it.
            Prediction.objects.bulk_create(
                [_interactive_row(submission.header, status=Prediction.Status.RUNNING)],
                ignore_conflicts=True,
            )
        else:
            _job_create(submission=submission, user=user, api_key=api_key)


def _poll_job(*, prediction_id, timeout: float) -> Outcome:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        row = (
            Prediction.objects.filter(id=prediction_id)
            .values("status", "outputs", "outputs_file", "error", "compute_ms")
            .first()
        )
        if row and row["status"] in {
            Prediction.Status.SUCCEEDED,
            Prediction.Status.FAILED,
            Prediction.Status.CANCELED,
        }:
            outputs = row["outputs"]
            if outputs is None and row["outputs_file"]:
                with default_storage.open(row["outputs_file"]) as handle:
                    outputs = json.load(handle)
            return Outcome(
                status=row["status"], outputs_json=outputs, error=row["error"], compute_ms=row["compute_ms"]
            )
        if time.monotonic() >= deadline:
            return Outcome(status="pending")
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.1)


def outcome_outputs_json(outcome: Outcome) -> list | None:
    if outcome.outputs is not None:
        return encode_outputs_json(outcome.outputs)
    return outcome.outputs_json


def outcome_top(outcome: Outcome, target: Target) -> list | None:
    if not target.task.endswith("classification") or not target.labels or outcome.status != "succeeded":
        return None
    if outcome.outputs is not None:
        return top_classes(outcome.outputs, target.labels)
    tensors = {
        o["name"]: np.asarray(o["data"]).reshape(o["shape"])
        for o in outcome.outputs_json or []
        if o["datatype"].startswith("FP")
    }
    return top_classes(tensors, target.labels)


def inputs_to_json(tensors: dict[str, np.ndarray]) -> list[dict]:
    from .codec import datatype_of

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


# --- running (in the worker) --------------------------------------------------------------------------------


@dataclass
class Finished:
    """A finished prediction to record: interactive ones are inserted, jobs update their row."""

    id: str
    status: str
    model_id: int
    header: dict | None = None  # interactive calls: who and what, from the request
    outputs: dict[str, np.ndarray] | None = None
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue_ms: float | None = None
    compute_ms: float | None = None
    bytes_out: int = 0


def prediction_execute(*, prediction_id: str, soft_time_limit: float | None = None) -> None:
    """Run a queued job. Idempotent: a finished or canceled prediction is not run again."""
    now = timezone.now()
    claimed = Prediction.objects.filter(
        id=prediction_id, status__in=[Prediction.Status.QUEUED, Prediction.Status.RUNNING]
    ).update(status=Prediction.Status.RUNNING, attempts=F("attempts") + 1, started_at=now)
    if not claimed:
        logger.info("prediction %s is already finished or canceled: not run again", prediction_id)
        return
    prediction = Prediction.objects.select_related("version").get(id=prediction_id)
    if prediction.attempts > settings.PREDICTION_MAX_ATTEMPTS:
        prediction_fail(
            prediction_id=prediction.id,
            error=f"The worker running this prediction was lost {prediction.attempts - 1} times; "
            "not retried.",
        )
        return
    finished = Finished(
        id=str(prediction.id),
        status=Prediction.Status.SUCCEEDED,
        model_id=prediction.version.model_id,
        started_at=now,
        queue_ms=(now - prediction.created_at).total_seconds() * 1000,
    )
    started = time.perf_counter()
    try:
        if prediction.version.status != ModelVersion.Status.READY:
            raise RuntimeFailure("this model version is not ready to run")
        runtime = runtime_for(version_ref(prediction.version))
        finished.outputs = runtime.run_with_limit(inputs_from_json(prediction.inputs), soft_time_limit)
    except RuntimeFailure as exc:
        finished.status, finished.error = Prediction.Status.FAILED, str(exc)
    finished.compute_ms = (time.perf_counter() - started) * 1000
    finished.finished_at = timezone.now()
    predictions_record([finished])


def predictions_record(finished: list[Finished]) -> None:
    """Record finished predictions in bulk, and count the model runs. Compute time is charged here."""
    if not finished:
        return
    inserts, runs = [], {}
    for item in finished:
        outputs_json, outputs_file, bytes_out = _stored_outputs(item)
        item.bytes_out = bytes_out
        fields = {
            "status": item.status,
            "outputs": outputs_json,
            "outputs_file": outputs_file,
            "error": item.error,
            "started_at": item.started_at,
            "finished_at": item.finished_at,
            "queue_ms": item.queue_ms,
            "compute_ms": item.compute_ms,
            "bytes_out": bytes_out,
        }
        if item.header is not None:
            header = item.header
            inserts.append(
                Prediction(
                    id=item.id,
                    user_id=header["user_id"],
                    api_key_id=header["api_key_id"],
                    version_id=header["version_id"],
                    source=header["source"],
                    created_at=datetime.fromtimestamp(header["created_at"], tz=UTC),
                    bytes_in=header["bytes_in"],
                    attempts=1,
                    **fields,
                )
            )
        else:
            # A canceled job stays canceled.
            Prediction.objects.filter(id=item.id, status=Prediction.Status.RUNNING).update(**fields)
        if item.status == Prediction.Status.SUCCEEDED:
            runs[item.model_id] = runs.get(item.model_id, 0) + 1
    with transaction.atomic():
        if inserts:
            Prediction.objects.bulk_create(
                inserts,
                update_conflicts=True,
                unique_fields=["id"],
                update_fields=[
                    "status",
                    "outputs",
                    "outputs_file",
                    "error",
                    "started_at",
                    "finished_at",
                    "queue_ms",
                    "compute_ms",
                    "bytes_out",
                ],
            )
        for model_id, count in runs.items():
            Model.objects.filter(id=model_id).update(runs=F("runs") + count)
    # Usage ledger and compute quota: each finished prediction is accounted once (Prediction.charged).
    charge_finished([item.id for item in finished])


def _stored_outputs(item: Finished) -> tuple[list | None, str, int]:
    if item.outputs is None:
        return None, "", 0
    encoded = encode_outputs_json(item.outputs)
    raw = json.dumps(encoded, separators=(",", ":")).encode()
    if len(raw) <= settings.PREDICTION_INLINE_OUTPUT_BYTES:
        return encoded, "", len(raw)
    name = default_storage.save(f"predictions/{item.id}.json", ContentFile(raw))
    return None, name, len(raw)


def _interactive_row(header: dict, *, status: str) -> Prediction:
    return Prediction(
        id=header["id"],
        user_id=header["user_id"],
        api_key_id=header["api_key_id"],
        version_id=header["version_id"],
        source=header["source"],
        status=status,
        created_at=datetime.fromtimestamp(header["created_at"], tz=UTC),
        started_at=timezone.now(),
        bytes_in=header["bytes_in"],
        attempts=1,
    )


def prediction_fail(*, prediction_id, error: str) -> bool:
    """Mark a queued or running prediction failed; False if it had already finished."""
    return bool(
        Prediction.objects.filter(
            id=prediction_id, status__in=[Prediction.Status.QUEUED, Prediction.Status.RUNNING]
        ).update(status=Prediction.Status.FAILED, error=error, finished_at=timezone.now())
    )


class NotCancelable(Exception):
    pass


def prediction_cancel(*, prediction: Prediction) -> Prediction:
    updated = Prediction.objects.filter(
        id=prediction.id, status__in=[Prediction.Status.QUEUED, Prediction.Status.RUNNING]
    ).update(status=Prediction.Status.CANCELED, finished_at=timezone.now(), error="Canceled by the user.")
    prediction.refresh_from_db()
    if not updated:
        raise NotCancelable(
            f"This prediction already {prediction.status}; only queued or running ones can be canceled."
        )
    return prediction


def predictions_reap() -> int:
    """Fail what no worker will finish: running past the hard limit (plus a margin), or out of attempts."""
    now = timezone.now()
    limit = settings.CELERY_TASK_TIME_LIMIT + settings.PREDICTION_REAP_MARGIN
    stuck = Prediction.objects.filter(
        status=Prediction.Status.RUNNING, started_at__lt=now - timedelta(seconds=limit)
    )
    count = stuck.update(
        status=Prediction.Status.FAILED,
        finished_at=now,
        error=f"Timed out: still running after {limit} s "
        f"(the time limit is {settings.CELERY_TASK_TIME_LIMIT} s); "
        "its worker was lost or the model ran too long.",
    )
    count += Prediction.objects.filter(
        status__in=[Prediction.Status.QUEUED, Prediction.Status.RUNNING],
        attempts__gte=settings.PREDICTION_MAX_ATTEMPTS,
        started_at__lt=now - timedelta(seconds=limit),
    ).update(
        status=Prediction.Status.FAILED, finished_at=now, error="Failed after the maximum number of attempts."
    )
    never_started = now - timedelta(seconds=settings.PREDICTION_QUEUED_MAX_SECONDS)
    count += Prediction.objects.filter(status=Prediction.Status.QUEUED, created_at__lt=never_started).update(
        status=Prediction.Status.FAILED, finished_at=now, error="No worker started this prediction in time."
    )
    if count:
        logger.warning("reaper marked %d predictions failed", count)
    return count
