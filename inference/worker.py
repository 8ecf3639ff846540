"""What the Celery worker runs besides tasks: the runner pool's supervisor (`inference.runners.supervisor`).

A bootstep starts it in the worker's main process, which is trusted (it has the database and Redis); the model
files run only in the runner processes it starts. Celery pool processes reach it over a Unix socket whose path
is set in the environment before the pool forks.
"""

from __future__ import annotations

import os
import tempfile

from celery import bootsteps
from celery.signals import celeryd_after_setup
from django.conf import settings

from marketplace.sandbox.validation import refuse_unconfined
from portal.startup import refuse_to_start

from .runners.supervisor import SOCKET_ENV, Supervisor
from .scheduling.pools import served_pools


@celeryd_after_setup.connect
def consume_served_pools(sender, instance, **kwargs) -> None:
    """The worker consumes its pools' Celery queues: exactly INFERENCE_QUEUES when set (over any -Q), else
    the default queue and every queue a model is placed on, added to what -Q selected."""
    queues = instance.app.amqp.queues
    if settings.INFERENCE_QUEUES:
        queues.select(served_pools())
    else:
        for pool in served_pools():
            queues.select_add(pool)


class InferenceWorkerStep(bootsteps.StartStopStep):
    def __init__(self, worker, **kwargs):
        # Encrypted model files and no key (or the wrong one): the worker does not start, and says why.
        refuse_to_start()
        refuse_unconfined()
        self.socket_dir = tempfile.mkdtemp(prefix="modelport-supervisor-")
        os.environ[SOCKET_ENV] = os.path.join(self.socket_dir, "jobs.sock")
        self.supervisor: Supervisor | None = None

    def start(self, worker) -> None:
        self.supervisor = Supervisor(
            f"{worker.hostname}:{os.getpid()}", os.environ[SOCKET_ENV], served_pools()
        )
        self.supervisor.start()

    def stop(self, worker) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        try:
            os.rmdir(self.socket_dir)
        except OSError:
            pass
