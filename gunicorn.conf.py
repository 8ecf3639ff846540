"""gunicorn's settings for Modelport, read from the working folder (`gunicorn portal.wsgi`).

Metrics: every worker writes prometheus_client's multiprocess files to settings.METRICS_DIR (`/metrics`
adds them up). The master prepares the folder before it forks, and tells prometheus_client when a worker
exits, so its live gauges stop counting.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

# `gunicorn portal.wsgi` alone serves as in production. Threads, because a prediction's request waits on its
# runner's answer without using the CPU: gunicorn's default (one synchronous worker) would serve one caller
# at a time. Command-line flags, `GUNICORN_CMD_ARGS` and `WEB_CONCURRENCY` (the worker count) still win.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = 8
timeout = 120


def on_starting(server):
    import django

    django.setup()
    from portal.metrics import metrics_dir_prune

    metrics_dir_prune()


def child_exit(server, worker):
    from portal.metrics import process_exited

    process_exited(worker.pid)
