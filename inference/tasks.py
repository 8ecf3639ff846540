"""Celery tasks: thin wrappers that fetch by id and call a service."""

from __future__ import annotations

import logging

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from django.conf import settings

from portal.celery import app

from .services import prediction_execute, prediction_fail
from .worker import InferenceWorkerStep

logger = logging.getLogger(__name__)

app.steps["worker"].add(InferenceWorkerStep)


class PredictionTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Runs in the worker's main process when the hard limit killed the pool process running it.
        if isinstance(exc, TimeLimitExceeded) and kwargs.get("prediction_id"):
            prediction_fail(
                prediction_id=kwargs["prediction_id"],
                error=f"Timed out: the model ran past the {settings.CELERY_TASK_TIME_LIMIT} s time limit.",
            )


@shared_task(name="inference.run_prediction", base=PredictionTask, acks_late=True, reject_on_worker_lost=True)
def run_prediction(*, prediction_id: str) -> None:
    try:
        prediction_execute(prediction_id=prediction_id, soft_time_limit=settings.CELERY_TASK_SOFT_TIME_LIMIT)
    except SoftTimeLimitExceeded:
        prediction_fail(
            prediction_id=prediction_id,
            error=f"Timed out: the model ran past the {settings.CELERY_TASK_SOFT_TIME_LIMIT} s time limit.",
        )
    except Exception as exc:
        logger.exception("prediction %s failed", prediction_id)
        prediction_fail(prediction_id=prediction_id, error=f"The worker could not run this prediction: {exc}")
