"""Worker pools: which queue runs a model, and which queues this worker serves.

A pool is a named queue. A model runs on the one an admin placed it on (`Model.queue`, blank for the
default, `INFERENCE_JOB_QUEUE`); a worker serves the queues in `INFERENCE_QUEUES`, or all of them when it is
unset. The name is both the Celery queue of the model's jobs and validations and the Redis wake-up list of
its interactive calls (`queue.py`), so one setting routes both paths.
"""

from __future__ import annotations

import logging

from django.conf import settings

logger = logging.getLogger(__name__)


def pool_of(model_queue: str) -> str:
    return model_queue or settings.INFERENCE_JOB_QUEUE


def placed_pools() -> list[str]:
    from marketplace.models import Model

    return sorted(set(Model.objects.exclude(queue="").values_list("queue", flat=True).distinct()))


def served_pools() -> list[str]:
    """The pools this worker serves: INFERENCE_QUEUES, or the default queue and every queue a model is on."""
    if settings.INFERENCE_QUEUES:
        return list(dict.fromkeys(settings.INFERENCE_QUEUES))
    try:
        placed = placed_pools()
    except Exception:  # the database out of reach as the worker starts: serve the default queue meanwhile
        logger.exception("could not read the queues models are placed on; serving the default queue only")
        placed = []
    return list(dict.fromkeys([settings.INFERENCE_JOB_QUEUE, *placed]))


def default_pool(name: str) -> bool:
    """Whether `name` is the default pool. The web and a worker may call it differently (a worker started
    with its own INFERENCE_JOB_QUEUE, or -Q): in Redis the default pool has one name for all, so they meet."""
    return name in ("", settings.INFERENCE_JOB_QUEUE)
