"""What every server process checks before it serves: the system checks tagged STARTUP_TAG, registered by the
apps (e.g. that the model-file master key opens the stored files). runserver and management commands run them
with the other system checks; gunicorn (`wsgi.py`) and the Celery worker call `refuse_to_start` themselves."""

from __future__ import annotations

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

STARTUP_TAG = "startup"


def refuse_to_start() -> None:
    """ImproperlyConfigured, naming every problem, when a start-up check fails."""
    problems = [error for error in checks.run_checks(tags=[STARTUP_TAG]) if error.is_serious()]
    if problems:
        raise ImproperlyConfigured("\n".join(f"{error.id}: {error.msg}" for error in problems))
