"""Background work of the catalog: validating uploads and optimizing versions, in the worker, never in the web
process."""

from celery import shared_task
from django.conf import settings
from django.db.utils import InterfaceError, OperationalError

from . import files, optimizing, services
from .task_names import OPTIMIZE_VERSION, VALIDATE_VERSION

# PostgreSQL or the file storage out of reach (or a connection it dropped): the version would stay
# `validating` for good, so the task is tried again with backoff (1 s, 2 s, 4 s … a minute apart, for half
# an hour).
RETRIED_ON = (OperationalError, InterfaceError, files.FileUnavailable)


@shared_task(
    name=VALIDATE_VERSION,
    soft_time_limit=settings.MODEL_VALIDATION_TIMEOUT_SECONDS + 20,
    time_limit=settings.MODEL_VALIDATION_TIMEOUT_SECONDS + 30,
    autoretry_for=RETRIED_ON,
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=40,
)
def validate_version_task(*, version_id: int) -> None:
    services.validate_version(version_id=version_id)


@shared_task(
    name=OPTIMIZE_VERSION,
    # The optimizer's child and then the validation child, each under the validation time limit.
    soft_time_limit=2 * settings.MODEL_VALIDATION_TIMEOUT_SECONDS + 30,
    time_limit=2 * settings.MODEL_VALIDATION_TIMEOUT_SECONDS + 40,
    autoretry_for=RETRIED_ON,
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=40,
)
def optimize_version_task(*, version_id: int) -> None:
    optimizing.optimize_version(version_id=version_id)
