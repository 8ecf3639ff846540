"""Celery tasks: thin wrappers that fetch by id and call a service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings

from portal.celery import app

from . import ledger
from .services import prediction_execute
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
    name="inference.run_prediction",
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
