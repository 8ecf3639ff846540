"""gunicorn's settings for Modelport, read from the working folder (`gunicorn portal.wsgi`).

Metrics: every worker writes prometheus_client's multiprocess files to settings.METRICS_DIR (`/metrics`
adds them up). The master prepares the folder before it forks, and tells prometheus_client when a worker
exits, so its live gauges stop counting.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def on_starting(server):
    import django

    django.setup()
    from portal.metrics import metrics_dir_prune

    metrics_dir_prune()


def child_exit(server, worker):
    from portal.metrics import process_exited

    process_exited(worker.pid)
