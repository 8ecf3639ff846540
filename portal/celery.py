import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def drop_broken_database_connections(**kwargs) -> None:
    """Each task starts as a Django request does: a connection that failed (PostgreSQL restarted) or outlived
    CONN_MAX_AGE is dropped, and the next query checks the connection first (CONN_HEALTH_CHECKS).

    Celery's Django fix-up closes connections around a task only once in CELERY_DB_REUSE_MAX * 2 turns, which
    keeps connections warm but also kept a dead one for good after a PostgreSQL restart (issue 19).
    """
    from django.db import close_old_connections

    close_old_connections()
