"""Celery tasks: thin wrappers that fetch by id and call a service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings

from portal.celery import app

from . import ledger, webhooks
from .services import prediction_execute
from .task_names import DELIVER_WEBHOOK, RUN_PREDICTION
from .worker import InferenceWorkerStep

logger = logging.getLogger(__name__)

app.steps["worker"].add(InferenceWorkerStep)

# The task only waits on the runner pool, which enforces the prediction's own time limit; these are backstops.
TASK_SOFT_LIMIT = settings.PREDICTION_TIME_LIMIT + 90
TASK_HARD_LIMIT = settings.PREDICTION_TIME_LIMIT + 120


class PredictionTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        if isinstance(exc, TimeLimitExceeded) and kwargs.get("prediction_id"):
            ledger.fail(kwargs["prediction_id"], "The worker running this prediction stopped answering.")


@shared_task(
    name=RUN_PREDICTION,
    base=PredictionTask,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=TASK_SOFT_LIMIT,
    time_limit=TASK_HARD_LIMIT,
)
def run_prediction(*, prediction_id: str) -> None:
    try:
        prediction_execute(prediction_id=prediction_id)
    except SoftTimeLimitExceeded:
        ledger.fail(prediction_id, "The worker running this prediction stopped answering.")
    except Exception as exc:
        logger.exception("prediction %s failed", prediction_id)
        ledger.fail(prediction_id, f"The worker could not run this prediction: {exc}")


@shared_task(
    bind=True,
    name=DELIVER_WEBHOOK,
    acks_late=True,
    soft_time_limit=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 30,
    time_limit=settings.WEBHOOK_TIMEOUT_SECONDS * 2 + 40,
)
def deliver_webhook(
    self, *, prediction_id: str, event: str, message_id: str, body: str | None = None
) -> None:
    """One attempt at one event; a failed one is tried again by Celery with exponential backoff, the same
    `webhook-id` and body, until WEBHOOK_MAX_ATTEMPTS."""
    attempt = self.request.retries + 1
    result, body = webhooks.delivery_attempt(
        prediction_id=prediction_id, event=event, message_id=message_id, body=body, attempt=attempt
    )
    if result.delivered or not result.retry:
        return
    if attempt >= settings.WEBHOOK_MAX_ATTEMPTS:
        logger.warning(
            "webhook %s of prediction %s: gave up after %d attempts", event, prediction_id, attempt
        )
        return
    raise self.retry(
        kwargs={"prediction_id": prediction_id, "event": event, "message_id": message_id, "body": body},
        countdown=webhooks.retry_delay(attempt),
        max_retries=settings.WEBHOOK_MAX_ATTEMPTS,
    )
