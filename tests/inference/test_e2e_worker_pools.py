"""A second worker on "another machine": its own empty data folder and model cache, no access to the web's
files, only the database, Redis, the broker and the S3 bucket. It serves the queue (pool) an admin placed a
model on, and that model's calls, interactive and jobs, are run there and nowhere else.

As root (the suite's machines) that worker runs in a network namespace of its own, reaching PostgreSQL, Redis
and the S3 server only over a veth pair (`tests.netns`); elsewhere it is a plain process with the same setup.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from django.conf import settings

from marketplace.models import Model
from marketplace.services import model_update
from portal.models import ApiKey
from tests import netns
from tests.conftest import PROJECT_ROOT, ServingStack, WorkerProcess, database_url_for_test_db
from tests.marketplace.conftest import onnx_model_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BODY = {"inputs": {"features": [[1.0, 2.0, 3.0, 4.0]]}}


def port_of(url: str) -> int:
    return urlsplit(url).port


def via(url: str, address: str) -> str:
    """`url` with its host replaced by `address` (the namespace's way to a server of this one)."""
    parts = urlsplit(url)
    netloc = parts.netloc.replace(parts.hostname, address)
    return urlunsplit(parts._replace(netloc=netloc))


class WorkerElsewhere(WorkerProcess):
    """A Celery worker started in `host`'s network namespace, with exactly the environment `env` adds."""

    def __init__(self, log_path, extra_args, *, host: netns.IsolatedHost, env: dict[str, str]):
        super().__init__(log_path, extra_args)
        self.host, self.env = host, env

    def spawn(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            self.host.command([sys.executable, "-m", *command]),
            cwd=PROJECT_ROOT,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdout=open(self.log_path, "ab"),  # noqa: SIM115 - the child keeps it
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def files_under(folder) -> list[str]:
    return sorted(str(path) for path in folder.rglob("*") if path.is_file() and "metrics" not in path.parts)


def test_a_model_placed_on_a_pool_runs_on_that_pools_worker_only(alice, tmp_path, s3_server):
    bucket = s3_server.new_bucket()
    storage = s3_server.storage_env(bucket)
    (tmp_path / "web").mkdir()
    stack = ServingStack(
        tmp_path / "web",
        **storage,
        MODELPORT_DATA_DIR=str(tmp_path / "web" / "data"),
        INFERENCE_LOOKUP_CACHE_SECONDS="0",
    )
    default_pool = stack.env["INFERENCE_JOB_QUEUE"]
    big_pool = f"big-{stack.tag}"
    stack.env["INFERENCE_QUEUES"] = default_pool  # the first machine's worker: the default pool only
    stack.start()
    other = tmp_path / "other-machine"
    (other / "metrics").mkdir(parents=True)

    host = None
    if netns.available():
        host = netns.IsolatedHost(stack.tag, other / "forwarder.log")
        servers = [database_url_for_test_db(), settings.CELERY_BROKER_URL, settings.REDIS_URL, s3_server.url]
        host.start(sorted({port_of(url) for url in servers}))

    def start_big_worker(log: str) -> WorkerProcess:
        if host is not None:
            # Everything through the veth pair: nothing of this machine but its servers' ports is reachable.
            elsewhere = {
                **storage,
                "AWS_S3_ENDPOINT_URL": via(s3_server.url, host.host_address),
                "DATABASE_URL": via(database_url_for_test_db(), host.host_address),
                "CELERY_BROKER_URL": via(settings.CELERY_BROKER_URL, host.host_address),
                "REDIS_URL": via(settings.REDIS_URL, host.host_address),
                "MODELPORT_DATA_DIR": str(other / "data"),
                "PROMETHEUS_MULTIPROC_DIR": str(other / "metrics"),
                "INFERENCE_REDIS_PREFIX": stack.env["INFERENCE_REDIS_PREFIX"],
                "INFERENCE_JOB_QUEUE": default_pool,
                "INFERENCE_QUEUES": big_pool,
            }
            worker = WorkerElsewhere(
                other / log, ["--hostname", f"{log}-{stack.tag}@%h"], host=host, env=elsewhere
            )
            worker.start()
            assert os.readlink(f"/proc/{worker.process.pid}/ns/net") != os.readlink("/proc/self/ns/net")
            return worker
        worker = WorkerProcess(other / log, ["--hostname", f"{log}-{stack.tag}@%h"])
        with pytest.MonkeyPatch.context() as patch:
            # Only what API.md says a worker needs: database, broker, Redis (from the environment the suite
            # runs with), the storage settings, and the pool it serves.
            for name, value in {
                **storage,
                "MODELPORT_DATA_DIR": str(other / "data"),
                "PROMETHEUS_MULTIPROC_DIR": str(other / "metrics"),
                "INFERENCE_REDIS_PREFIX": stack.env["INFERENCE_REDIS_PREFIX"],
                "INFERENCE_JOB_QUEUE": default_pool,
                "INFERENCE_QUEUES": big_pool,
            }.items():
                patch.setenv(name, value)
            patch.delenv("MEDIA_ROOT", raising=False)
            patch.delenv("INFERENCE_MODEL_CACHE_DIR", raising=False)
            worker.start()
        return worker

    key = ApiKey.issue(user=alice, name="pools", scopes=["read", "predict", "upload"])[1]
    auth = {"Authorization": f"Bearer {key}"}
    worker = again = None
    try:
        uploaded = requests.post(
            f"{stack.web.url}/api/v1/models",
            headers=auth,
            data={"name": "big-one", "task": "tabular-regression"},
            files={"file": ("big.onnx", onnx_model_bytes(bias=0.375), "application/octet-stream")},
            timeout=120,
        )
        assert uploaded.status_code == 201, uploaded.text
        sha256 = uploaded.json()["versions"][0]["sha256"]
        model_update(model=Model.objects.get(name="big-one"), queue=big_pool)  # as the admin's form does
        worker = start_big_worker("worker")
        ready = f"{stack.web.url}/v2/models/alice/big-one/ready"
        deadline = time.monotonic() + 60
        while requests.get(ready, headers=auth, timeout=10).status_code != 200:
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.3)

        predicted = requests.post(
            f"{stack.web.url}/api/v1/models/alice/big-one/predict", headers=auth, json=BODY, timeout=60
        )
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["status"] == "succeeded"

        queued = requests.post(
            f"{stack.web.url}/api/v1/models/alice/big-one/predict",
            headers={**auth, "Prefer": "respond-async"},
            json=BODY,
            timeout=60,
        )
        assert queued.status_code == 202, queued.text
        job_url = queued.json()["url"]
        deadline = time.monotonic() + 60
        while (job := requests.get(job_url, headers=auth, timeout=10).json())["status"] not in (
            "succeeded",
            "failed",
        ):
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.3)
        assert job["status"] == "succeeded", job

        # The worker leaves cleanly: its heartbeat ends with it, so the next call waits as a job in the pool's
        # queue (not on a worker that is gone), and the pool's next worker runs it.
        worker.stop()
        assert requests.get(ready, headers=auth, timeout=10).status_code == 503
        waiting = requests.post(
            f"{stack.web.url}/api/v1/models/alice/big-one/predict?wait=2", headers=auth, json=BODY, timeout=60
        )
        assert waiting.status_code == 202, waiting.text
        again = start_big_worker("worker-again")
        deadline = time.monotonic() + 60
        while (late := requests.get(waiting.json()["url"], headers=auth, timeout=10).json())["status"] != (
            "succeeded"
        ):
            assert late["status"] in ("queued", "running") and time.monotonic() < deadline, late
            time.sleep(0.3)
    finally:
        for process in (worker, again):
            if process is not None:
                process.stop()
        stack.stop()
        if host is not None:
            host.stop()

    # Both calls, the interactive one and the job, ran on the big pool's worker (each finished prediction is
    # a log line of the worker that ran it), none on the first machine's.
    for prediction in (predicted.json()["id"], queued.json()["id"]):
        assert prediction in worker.log_text()
        assert prediction not in stack.worker.log_text()
    # It fetched the model from the bucket into its own cache, by sha256, and wrote no model file elsewhere.
    assert (other / "data" / "model-cache" / sha256).is_file()
    assert [p for p in files_under(other / "data") if "model-cache" not in p] == []
