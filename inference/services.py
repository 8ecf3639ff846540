"""The prediction pipeline, the one way every prediction goes, whatever its protocol:

    admit (key, scope, quota) → look up the ready version → queue → runner → result → ledger

Protocols (`protocols/`: `rest.py` for /api/v1, `oip.py` for the Open Inference Protocol…) only parse, call
`prediction_submit` and `prediction_wait`, and render the `Outcome`. Interactive calls travel through the
Redis request queue (`scheduling/queue.py`) when it is configured; jobs, and every call without Redis, are
`Prediction` rows run by a Celery task, which hands them to the same runner pool. Every status write is the
ledger's (`ledger.py`).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from redis.exceptions import RedisError

from marketplace import files, selectors
from marketplace.models import Model, ModelVersion
from marketplace.services import MODEL_CACHE_PREFIX
from portal import process_cache
from portal.celery import app as celery_app
from portal.logs import request_note
from portal.quotas import Admission, admission_refund, admit_prediction

from . import ledger
from .codec import encode_outputs_json, top_classes
from .models import Prediction
from .runners.link import BUSY, LinkLost, SupervisorLink, link_for
from .scheduling import queue
from .scheduling.pools import pool_of
from .scheduling.queue import RequestHeader
from .scheduling.scheduler import ModelRef
from .task_names import RUN_PREDICTION

logger = logging.getLogger(__name__)

CALLER_GONE = "Canceled: the caller hung up, or its deadline passed, before the answer."


class VersionNotFound(LookupError):
    pass


class VersionValidating(VersionNotFound):
    """Nothing ready to run yet, but a version is being validated: 409 with Retry-After (UNAVAILABLE on
    gRPC); the caller may retry in a few seconds. A subclass: a protocol that does not tell them apart says
    404."""

    retry_after = 5

    def __init__(self, *, owner: str, name: str, number: int):
        super().__init__(f"Version {number} of {owner}/{name} is validating; retry in a few seconds.")
        self.number = number


# A gated model the caller may see but was not granted: 403 on /api/v1 and /v2, PERMISSION_DENIED on gRPC.
GateClosed = selectors.GateClosed


# --- what to run (cached: the hot path must not query the catalog on every request) -------------------------


@dataclass(frozen=True)
class Target:
    """A ready version of a model, with what the web needs to admit and queue a request for it."""

    model_id: int
    owner_id: int
    slug: str
    visibility: str
    gated: bool
    owner: str
    name: str
    task: str
    labels: list
    preprocessing: dict
    number: int
    versions: list[int]
    version_id: int
    sha256: str
    format: str
    file_name: str
    size: int
    signature: dict
    # Text models: the version's tokenizer.json (storage name and content hash), blank without one.
    tokenizer_name: str = ""
    tokenizer_sha256: str = ""
    # The envelopes of the files' data keys when stored encrypted (marketplace.encryption), else blank.
    file_key: str = ""
    tokenizer_key: str = ""
    # The worker pool an admin placed the model on (`pools.py`), blank for the default one.
    queue: str = ""

    @property
    def takes_text(self) -> bool:
        return bool(self.tokenizer_sha256)

    def visible_to(self, user) -> bool:
        return selectors.is_visible_to(user, owner_id=self.owner_id, visibility=self.visibility)

    def runnable_by(self, user) -> bool:
        return selectors.may_run(user, model_id=self.model_id, owner_id=self.owner_id, gated=self.gated)

    @property
    def model_ref(self) -> ModelRef:
        specs = self.signature.get("inputs", [])
        return ModelRef(
            sha256=self.sha256,
            format=self.format,
            file_name=self.file_name,
            size=self.size,
            file_key=self.file_key,
            inputs=tuple(spec["name"] for spec in specs),
            outputs=tuple(spec["name"] for spec in self.signature.get("outputs", [])),
            batchable=bool(specs) and all(spec["shape"] and spec["shape"][0] == -1 for spec in specs),
        )


class TargetCache:
    """Version look-ups kept in this process, so the hot path does not query the catalog on every call.

    Bounded (INFERENCE_LOOKUP_CACHE_ENTRIES, the least recently used go first); a miss is never kept (anyone
    can ask for names that do not exist); a model's entries are forgotten when it changes (`model_changed`
    in marketplace.services, heard through `portal.process_cache`); and an expired entry is reloaded by one
    caller while the others keep getting it, so a refresh never stalls the calls in flight."""

    def __init__(self):
        self.entries: OrderedDict[tuple, tuple[float, Target]] = OrderedDict()
        self.lock = threading.Lock()
        self.reloading: set[tuple] = set()
        # Bumped by every forget: a load that overlapped one may hold what was just changed, and is not kept.
        self.generation = 0

    def get(self, key: tuple, load: Callable[[], Target | None]) -> Target | None:
        live = process_cache.sync()
        now = time.monotonic()
        with self.lock:
            entry = self.entries.get(key) if live else None
            if entry is not None:
                self.entries.move_to_end(key)
                expires, target = entry
                if expires > now or key in self.reloading:
                    return target
                self.reloading.add(key)
            generation = self.generation
        try:
            target = load()
        finally:
            if entry is not None:
                with self.lock:
                    self.reloading.discard(key)
        with self.lock:
            if target is None:
                self.entries.pop(key, None)
            elif live and generation == self.generation:
                self.entries[key] = (time.monotonic() + settings.INFERENCE_LOOKUP_CACHE_SECONDS, target)
                self.entries.move_to_end(key)
                while len(self.entries) > settings.INFERENCE_LOOKUP_CACHE_ENTRIES:
                    self.entries.popitem(last=False)
        return target

    def forget(self, keys: list[str] | None) -> None:
        """Drop the entries of the models named by `keys` (`marketplace.services.model_cache_key`), or all."""
        model_ids = None if keys is None else {int(key.rpartition(":")[2]) for key in keys}
        with self.lock:
            self.generation += 1
            for cached_key, (_expires, target) in list(self.entries.items()):
                if model_ids is None or target.model_id in model_ids:
                    del self.entries[cached_key]

    def __len__(self) -> int:
        return len(self.entries)


_targets = TargetCache()
process_cache.on_forget(MODEL_CACHE_PREFIX, _targets.forget)


def targets_forget() -> None:
    """Drop cached look-ups (rows recreated under the same names, as in tests)."""
    _targets.forget(None)


def target_find(*, owner: str, name: str, number: int | None, user, to_run: bool = False) -> Target:
    """The ready version `number` (or the latest ready one) of owner/name, if `user` may see the model.

    `to_run`: the caller is about to run it (or asks whether it can): GateClosed unless `user` may run it.
    The look-up is cached (`TargetCache`); the grant is not part of it, so a revoked one counts at once."""
    target = _targets.get(
        (owner, name.lower(), number), lambda: _target_load(owner=owner, name=name, number=number)
    )
    if target is None:
        _refuse_validating(owner=owner, name=name, number=number, user=user)
    if target is None or not target.visible_to(user):
        raise VersionNotFound(
            f"No model {owner}/{name}" + (f" version {number}" if number else "") + " to run."
        )
    if to_run and not target.runnable_by(user):
        raise GateClosed(owner=target.owner, name=target.name)
    request_note(model=target.slug, version=target.number)
    return target


def _refuse_validating(*, owner: str, name: str, number: int | None, user) -> None:
    """VersionValidating when `user` may see owner/name and the version asked for (or, without a number, any)
    is still being validated. Only on a look-up miss, which is never cached: one more query then."""
    model = (
        Model.objects.filter(owner__username=owner, name__iexact=name)
        .values("id", "owner_id", "visibility", "name")
        .first()
    )
    if model is None or not selectors.is_visible_to(
        user, owner_id=model["owner_id"], visibility=model["visibility"]
    ):
        return
    validating = ModelVersion.objects.filter(model_id=model["id"], status=ModelVersion.Status.VALIDATING)
    if number is not None:
        validating = validating.filter(number=number)
    found = validating.order_by("-number").values_list("number", flat=True).first()
    if found is not None:
        raise VersionValidating(owner=owner, name=model["name"], number=found)


def _target_load(*, owner: str, name: str, number: int | None) -> Target | None:
    model = Model.objects.select_related("owner").filter(owner__username=owner, name__iexact=name).first()
    if model is None:
        return None
    # Not filtered by visibility: the result is cached for every caller and `visible_to` checks each one.
    ready = list(selectors.ready_versions(model))
    if not ready:
        return None
    if number is None:
        version = selectors.latest_ready_version(model, among=ready)
    else:
        version = next((v for v in ready if v.number == number), None)
    if version is None:
        return None
    return Target(
        model_id=model.id,
        owner_id=model.owner_id,
        slug=model.slug,
        visibility=model.visibility,
        gated=model.gated,
        owner=model.owner.username,
        name=model.name,
        task=model.task,
        labels=list(model.labels or []),
        preprocessing=dict(model.preprocessing or {}),
        number=version.number,
        versions=sorted(v.number for v in ready),
        version_id=version.id,
        sha256=version.sha256,
        format=version.format,
        file_name=version.file.name,
        size=version.size,
        signature=version.signature or {},
        tokenizer_name=version.tokenizer.name or "",
        tokenizer_sha256=version.tokenizer_sha256,
        file_key=version.file_key,
        tokenizer_key=version.tokenizer_key,
        queue=model.queue,
    )


# --- admission and queueing ---------------------------------------------------------------------------------


@dataclass
class Submission:
    """A prediction on its way: a job (`prediction` is its row), or an interactive call sent to a runner
    pool on this host (`reply` will hold its answer) or queued in Redis for any host's (`call`)."""

    id: uuid.UUID
    target: Target
    header: RequestHeader
    tensors: dict[str, np.ndarray]
    started: float
    prediction: Prediction | None = None
    call: queue.PendingCall | None = None
    webhook: object | None = None  # webhooks.Webhook
    link: SupervisorLink | None = None
    reply: Future | None = None  # (reply header, outputs) from the linked runner pool
    admission: Admission | None = None


def prediction_submit(
    *,
    user,
    api_key,
    target: Target,
    inputs: dict[str, np.ndarray],
    source: str,
    bytes_in: int,
    asynchronous: bool = False,
    webhook=None,
) -> Submission:
    """Admit one prediction (inputs already checked against the signature) and queue it.

    A prediction with a `webhook` (`webhooks.Webhook`, checked) is always a job, even when its caller waits
    for the result: its row exists from the start, so the ledger's transitions can tell the webhook, and
    the interactive path carries nothing for webhooks.

    Raises QuotaExceeded (429) before anything is counted or queued, `queue.ModelBusy` (503, this model's
    queue is full) or `queue.Unavailable` (503, the task queue is down; the request is recorded as failed).
    """
    submission_id = uuid.uuid4()
    ref = target.model_ref
    header = RequestHeader(
        id=str(submission_id),
        user_id=user.id,
        api_key_id=getattr(api_key, "id", None),
        source=source,
        bytes_in=bytes_in,
        created_at=time.time(),
        model_id=target.model_id,
        version_id=target.version_id,
        sha256=target.sha256,
        format=target.format,
        file_name=target.file_name,
        size=target.size,
        file_key=target.file_key,
        inputs=list(ref.inputs),
        outputs=list(ref.outputs),
        batchable=ref.batchable,
        model=target.slug,
    )
    request_note(prediction=header.id)
    submission = Submission(
        id=submission_id, target=target, header=header, tensors=inputs, started=time.monotonic()
    )
    submission.webhook = webhook
    if asynchronous or webhook is not None or not queue.enabled():
        submission.admission = admit_prediction(user=user, api_key=api_key)
        submission.prediction = _job_create(submission)
        return submission
    link = link_for(target.queue)
    if link is not None:
        submission.admission = admit_prediction(user=user, api_key=api_key)
        try:
            # The web's limit of waiting calls per model holds, as on the queue (`queue.accept`).
            call = {**header.as_dict(), "queue_max": settings.INFERENCE_MODEL_QUEUE_MAX}
            submission.reply = link.submit(call, inputs)
            submission.link = link
        except LinkLost:  # the supervisor left as the call was sent: the job path waits for a worker
            submission.prediction = _job_create(submission)
        return submission
    # The admission pushes the call onto the queue in the same round trip, if it admits it.
    call = queue.prepare(header, inputs)
    admission = admit_prediction(
        user=user, api_key=api_key, then=queue.pushes(call, target.sha256, target.queue)
    )
    submission.admission = admission
    try:
        queue.accept(call, admission.pushed[0], model=target.slug, pool=target.queue)
        submission.call = call
    except queue.ModelBusy:
        # Refused, not served: it is recorded (every admitted request is) but costs no quota.
        admission_refund(admission)
        ledger.failed_create(header, "Refused: the model's queue was full.")
        raise
    except queue.NoConsumer:  # no worker is serving the queue now: the job path waits for one
        submission.prediction = _job_create(submission)
    return submission


def _job_create(submission: Submission) -> Prediction:
    prediction = ledger.job_create(
        header=submission.header, tensors=submission.tensors, webhook=submission.webhook
    )
    pool = submission.target.queue
    transaction.on_commit(lambda: job_enqueue(prediction_id=prediction.id, pool=pool))
    return prediction


def job_enqueue(*, prediction_id, pool: str = "") -> None:
    """Send a job to its model's pool (the default queue when blank)."""
    try:
        celery_app.send_task(
            RUN_PREDICTION, kwargs={"prediction_id": str(prediction_id)}, queue=pool_of(pool)
        )
    except Exception as exc:  # the broker's errors vary by transport
        logger.exception("could not queue prediction %s", prediction_id)
        ledger.fail(prediction_id, "The task queue was unavailable; not run.")
        raise queue.Unavailable("The task queue is unavailable; retry.") from exc


# --- waiting ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What a caller waiting on a submission gets: a finished prediction's fields, or `pending`.

    `unavailable` means the server could not give an answer (503): a time-out, a lost runner, Redis gone."""

    status: str
    outputs: dict[str, np.ndarray] | None = None
    outputs_json: list | None = None
    error: str = ""
    unavailable: bool = False
    compute_ms: float | None = None


def prediction_wait(
    *,
    submission: Submission,
    timeout: float,
    fall_back_to_job: bool,
    user,
    api_key,
    caller_gone_at_timeout: bool = False,
) -> Outcome:
    """Wait up to `timeout` s for the result.

    Not done by then: `pending` if `fall_back_to_job` (the record then exists, as a job or as a running row
    the worker completes), else a failed, `unavailable` outcome (a 503) that is recorded too; or, when the
    timeout is the caller's own deadline (`caller_gone_at_timeout`), the call is abandoned: canceled, free."""
    if submission.reply is not None:
        return _wait_link(submission, timeout, fall_back_to_job, caller_gone_at_timeout)
    if submission.call is None:
        outcome = _poll_job(prediction_id=submission.prediction.id, timeout=timeout)
        if outcome.status == "pending" and caller_gone_at_timeout:
            return prediction_abandon(submission, CALLER_GONE)
        if outcome.status == "pending" and not fall_back_to_job:
            return _job_given_up(submission.prediction.id)
        return outcome
    header = submission.header
    try:
        reply = queue.wait(submission.call, timeout)
    except queue.Unavailable as exc:
        ledger.failed_create(header, str(exc))
        return Outcome(status=Prediction.Status.FAILED, unavailable=True, error=str(exc))
    if reply is not None:
        status, outputs = reply
        if status["status"] == Prediction.Status.SUCCEEDED:
            return Outcome(status=status["status"], outputs=outputs, compute_ms=status.get("compute_ms"))
        return Outcome(
            status=status["status"], error=status["error"], unavailable=status.get("unavailable", False)
        )
    if caller_gone_at_timeout:
        return prediction_abandon(submission, CALLER_GONE)
    try:
        taken = not queue.withdraw(submission.call)
        if taken:
            # A runner holds it: a running row its record completes (or the reaper fails).
            ledger.running_create(header)
            if not fall_back_to_job:
                return Outcome(
                    status="pending", unavailable=True, error="No answer within the time limit; retry later."
                )
            return Outcome(status="pending")
        if not fall_back_to_job:
            error = "No worker answered in time; retry later."
            ledger.failed_create(header, error)
            return Outcome(status=Prediction.Status.FAILED, unavailable=True, error=error)
        submission.prediction = _job_create(submission)
        return Outcome(status="pending")
    except Exception as exc:  # Redis or the broker went away mid-call
        if isinstance(exc, queue.Unavailable):
            error = str(exc)
        else:
            logger.exception("could not hand prediction %s over", header.id)
            error = "The request queue is unavailable; retry."
        ledger.failed_create(header, error)
        return Outcome(status=Prediction.Status.FAILED, unavailable=True, error=error)


def _wait_link(
    submission: Submission, timeout: float, fall_back_to_job: bool, caller_gone_at_timeout: bool
) -> Outcome:
    try:
        reply, outputs = submission.reply.result(timeout)
    except TimeoutError:
        if caller_gone_at_timeout:
            return prediction_abandon(submission, CALLER_GONE)
        return link_gave_up(submission, fall_back_to_job)
    except CancelledError:  # `caller_left`
        return prediction_abandon(submission, CALLER_GONE)
    except LinkLost as exc:
        return link_lost(submission, exc)
    return link_outcome(submission, reply, outputs)


def link_outcome(submission: Submission, reply: dict, outputs: dict[str, np.ndarray]) -> Outcome:
    """The outcome of a call answered by a linked runner pool (whose record is the supervisor's to queue)."""
    if reply["status"] == BUSY:
        return link_refused(submission, reply["depth"])
    if reply["status"] == Prediction.Status.SUCCEEDED:
        return Outcome(status=reply["status"], outputs=outputs, compute_ms=reply.get("compute_ms"))
    return Outcome(status=reply["status"], error=reply["error"], unavailable=reply.get("unavailable", False))


def link_refused(submission: Submission, depth: int) -> Outcome:
    """The model's queue was full: refused, not served; recorded (every admitted request is), free."""
    admission_refund(submission.admission)
    ledger.failed_create(submission.header, "Refused: the model's queue was full.")
    busy = queue.ModelBusy(submission.target.slug, depth)
    return Outcome(status=Prediction.Status.FAILED, unavailable=True, error=str(busy))


def link_gave_up(submission: Submission, fall_back_to_job: bool) -> Outcome:
    """No answer in time: the pool holds the call and will record it; until then a running row stands for it
    (the reaper fails it if the pool never does)."""
    submission.link.forget(submission.header.id)
    ledger.running_create(submission.header)
    if fall_back_to_job:
        return Outcome(status="pending")
    return Outcome(status="pending", unavailable=True, error="No answer within the time limit; retry later.")


def caller_left(submission: Submission) -> None:
    """The caller hung up (from any thread): a wait on the runner pool's answer ends now, abandoned. (A call
    queued in Redis or a job is abandoned when its caller's deadline ends the wait.)"""
    if submission.reply is not None:
        submission.reply.cancel()


def prediction_abandon(submission: Submission, reason: str) -> Outcome:
    """The caller left before its answer (its deadline passed, or it canceled): the call is canceled, and
    costs no quota. One no runner has taken yet is not run; one that is running finishes unrecorded (its
    canceled record stands) and is not charged for compute."""
    if submission.link is not None:
        submission.link.cancel(submission.header.id)
    elif submission.call is not None:
        try:
            queue.withdraw(submission.call)
        except RedisError:  # Redis is gone: a runner that takes the call after all finds its record ended
            pass
    if submission.prediction is not None:
        ledger.cancel_if_active(submission.prediction.id, reason)
    else:
        ledger.canceled_create(submission.header, reason)
    if submission.admission is not None:
        admission_refund(submission.admission)
    return Outcome(status=Prediction.Status.CANCELED, error=reason)


def link_lost(submission: Submission, exc: Exception) -> Outcome:
    ledger.failed_create(submission.header, str(exc))
    return Outcome(status=Prediction.Status.FAILED, unavailable=True, error=str(exc))


def _job_given_up(prediction_id) -> Outcome:
    """The job of a caller who will not come back for it (answered 503, not 202) is failed, not left to run
    and be charged when nobody reads its answer. One that ended meanwhile is answered as it ended."""
    error = "No worker answered in time; not run. Retry later."
    if ledger.fail(prediction_id, error):
        return Outcome(status=Prediction.Status.FAILED, unavailable=True, error=error)
    return _poll_job(prediction_id=prediction_id, timeout=0)


def _poll_job(*, prediction_id, timeout: float) -> Outcome:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        row = (
            Prediction.objects.filter(id=prediction_id)
            .values("status", "outputs", "outputs_file", "error", "compute_ms")
            .first()
        )
        if row and row["status"] in ledger.ENDED:
            outputs = row["outputs"]
            if outputs is None and row["outputs_file"]:
                outputs = json.loads(files.read_bytes(row["outputs_file"]))
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


# --- jobs (in a Celery task) --------------------------------------------------------------------------------


def prediction_execute(*, prediction_id: str, run=None) -> None:
    """Run a queued job on the runner pool and record how it ended. Idempotent: an ended prediction is not run
    again. `run(header, tensors) -> (reply, outputs)` reaches the pool (default: this worker's supervisor)."""
    from .runners.supervisor import run_via_supervisor

    prediction = ledger.job_start(prediction_id)
    if prediction is None:
        logger.info("prediction %s already ended: not run again", prediction_id)
        return
    if prediction.attempts > settings.PREDICTION_MAX_ATTEMPTS:
        ledger.fail(
            prediction.id,
            f"The worker running this prediction was lost {prediction.attempts - 1} times; not retried.",
        )
        return
    version = prediction.version
    if version.status != ModelVersion.Status.READY:
        ledger.fail(prediction.id, "This model version is not ready to run.")
        return
    signature = version.signature or {}
    specs = signature.get("inputs", [])
    header = {
        "id": str(prediction.id),
        "sha256": version.sha256,
        "format": version.format,
        "file_name": version.file.name,
        "size": version.size,
        "file_key": version.file_key,
        "inputs": [spec["name"] for spec in specs],
        "outputs": [spec["name"] for spec in signature.get("outputs", [])],
        "batchable": bool(specs) and all(spec["shape"] and spec["shape"][0] == -1 for spec in specs),
        "model": version.model.slug,
        "version_id": version.id,
        "created_at": prediction.created_at.timestamp(),
    }
    started = time.perf_counter()
    started_at = None

    def on_start() -> None:
        nonlocal started, started_at
        started, started_at = time.perf_counter(), ledger.job_running(prediction)

    try:
        if run is None:
            reply, outputs = run_via_supervisor(
                header,
                ledger.inputs_from_json(prediction.inputs),
                settings.PREDICTION_TIME_LIMIT + 90,
                on_start=on_start,
            )
        else:
            on_start()
            reply, outputs = run(header, ledger.inputs_from_json(prediction.inputs))
    except (OSError, EOFError):
        # The detail (a socket's path, an errno) goes to the log; the ledger row says what the caller may do.
        logger.warning("prediction %s: the runner pool did not answer", prediction.id, exc_info=True)
        ledger.fail(prediction.id, "The worker's runner pool did not answer; it can be retried.")
        return
    started_at = started_at or timezone.now()  # answered without a runner (its file could not be had)
    ended = ledger.Ended(
        id=str(prediction.id),
        status=Prediction.Status.SUCCEEDED,
        model_id=version.model_id,
        started_at=started_at,
        queue_ms=(started_at - prediction.created_at).total_seconds() * 1000,
    )
    if reply["status"] == Prediction.Status.SUCCEEDED:
        ended.outputs = outputs
        ended.compute_ms = reply.get("compute_ms")
    else:
        ended.status, ended.error = Prediction.Status.FAILED, reply["error"]
        ended.compute_ms = (time.perf_counter() - started) * 1000
    ended.finished_at = timezone.now()
    ledger.finish([ended])
