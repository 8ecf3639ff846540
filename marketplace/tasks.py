"""Background work of the catalog: validating uploads, in the worker, never in the web process."""

from celery import shared_task
from django.conf import settings

from . import services


@shared_task(
    name="marketplace.validate_version",
    soft_time_limit=settings.MODEL_VALIDATION_TIMEOUT_SECONDS + 20,
    time_limit=settings.MODEL_VALIDATION_TIMEOUT_SECONDS + 30,
)
def validate_version_task(*, version_id: int) -> None:
    services.validate_version(version_id=version_id)
