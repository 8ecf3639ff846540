"""Redis stopped and started again under a trickle of requests to a live gunicorn and a Celery worker.

The deployment has a Redis of its own (cache, counters, request queue and broker), started and stopped here:
the session's servers, which other tests use, are never touched. Every answer is 200, or 503 with Retry-After;
after Redis is back, with nothing restarted, calls, an upload's validation and an async job all succeed again.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from marketplace.models import ModelVersion
from portal.models import ApiKey
from portal.services import quota_set
from tests.conftest import WebServer, WorkerProcess
from tests.marketplace.conftest import onnx_model_bytes
from tests.servers import RedisServer

from . import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DIGITS_BODY = {"inputs": {"pixels": [[0.5] * 64]}}


class Deployment:
    """gunicorn and a Celery worker on the test database, with `redis_url` for everything Redis does."""

    def __init__(self, root, redis_url: str):
        self.env = {
            "REDIS_URL": f"{redis_url}/1",
            "CELERY_BROKER_URL": f"{redis_url}/0",
            "PROMETHEUS_MULTIPROC_DIR": str(root / "metrics"),
        }
        (root / "metrics").mkdir()
        self.web = WebServer(root / "gunicorn.log", workers=1, threads=4)
        self.worker = WorkerProcess(root / "worker.log")
        self.tag = uuid.uuid4().hex[:8]

    def start(self) -> Deployment:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            # Not WorkerProcess.start: its readiness ping goes to the session's broker, not this one.
            self.worker.spawn(
                ["celery", "-A", "portal", "worker", "--loglevel", "INFO", "--concurrency", "1"]
                + ["--without-gossip", "--without-mingle", "--hostname", f"outage-{self.tag}@%h"]
            )
            self.web.start()
        self.wait_until(lambda: self.get("/v2/health/ready").status_code == 200, "not ready")
        return self

    def stop(self) -> None:
        self.web.stop()
        self.worker.stop()

    def get(self, path: str, key: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return requests.get(self.web.url + path, headers=headers, timeout=30)

    def post(self, path: str, key: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})}
        return requests.post(self.web.url + path, headers=headers, timeout=60, **kwargs)

    def wait_until(self, condition, message: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, (
                f"{message}\nreadiness: {self.get('/v2/health/ready').text}\nworker:\n{self.worker.log()}"
            )
            time.sleep(0.3)


def one_round(deployment: Deployment, key: str) -> dict[str, requests.Response]:
    """One of each: a prediction on both APIs, the catalog, a page, readiness."""
    return {
        "predict": deployment.post("/api/v1/models/alice/digits/predict", key, json=DIGITS_BODY),
        "v2 infer": deployment.post(
            "/v2/models/alice/digits/infer",
            key,
            json={"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 64], "data": [0.5] * 64}]},
        ),
        "catalog": deployment.get("/api/v1/models", key),
        "page": deployment.get("/"),
        "ready": deployment.get("/v2/health/ready"),
    }


def assert_served_or_unavailable(answers: dict[str, requests.Response]) -> None:
    for name, response in answers.items():
        assert response.status_code in (200, 503), f"{name}: {response.status_code} {response.text[:300]}"
        if response.status_code == 503:
            assert int(response.headers.get("Retry-After", "0")) > 0, f"{name}: {response.text[:300]}"
            if name != "page":
                body = response.json()
                assert "127.0.0.1" not in response.text, name
                assert body.get("detail") or body.get("error") or name == "ready", name


def all_served(answers: dict[str, requests.Response]) -> bool:
    return all(response.status_code == 200 for response in answers.values())


def upload(deployment: Deployment, key: str, name: str) -> requests.Response:
    return deployment.post(
        "/api/v1/models",
        key,
        data={"name": name, "task": "tabular-classification"},
        files={"file": ("tiny.onnx", onnx_model_bytes(), "application/octet-stream")},
    )


def test_redis_stopped_and_started_again_under_a_trickle(alice, tmp_path):
    quota_set(user=alice, requests_per_minute=100_000, requests_per_day=1_000_000)
    builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
    key = ApiKey.issue(user=alice, name="outage", scopes=["read", "predict", "upload"])[1]
    (tmp_path / "first").mkdir()
    redis_server = RedisServer(tmp_path / "first")
    redis_url = redis_server.start()
    deployment = Deployment(tmp_path, redis_url).start()
    try:
        assert all_served(one_round(deployment, key))

        redis_server.stop()
        seen_unavailable = set()
        for _ in range(3):
            answers = one_round(deployment, key)
            assert_served_or_unavailable(answers)
            seen_unavailable |= {name for name, response in answers.items() if response.status_code == 503}
        # Without Redis nothing counts a call against the quota: predictions are refused, not let through.
        assert {"predict", "v2 infer", "ready"} <= seen_unavailable
        down_upload = upload(deployment, key, "during-the-outage")
        assert down_upload.status_code in (201, 503), down_upload.text[:300]

        (tmp_path / "again").mkdir()
        restarted = RedisServer(tmp_path / "again")
        restarted.port = redis_server.port
        restarted.start()

        def recovered() -> bool:
            answers = one_round(deployment, key)
            assert_served_or_unavailable(answers)
            return all_served(answers)

        deployment.wait_until(recovered, "calls did not succeed again after Redis came back")

        # The worker consumes from the restarted broker: an upload validates and an async job runs.
        response = upload(deployment, key, "after-the-outage")
        assert response.status_code == 201, response.text[:300]
        deployment.wait_until(
            lambda: ModelVersion.objects.filter(model__name="after-the-outage", status="ready").exists(),
            "the upload made after Redis came back was never validated",
        )
        job = deployment.post(
            "/api/v1/models/alice/digits/predict", key, json=DIGITS_BODY, headers={"Prefer": "respond-async"}
        )
        assert job.status_code == 202, job.text[:300]
        job_url = f"/api/v1/predictions/{job.json()['id']}"
        deployment.wait_until(
            lambda: deployment.get(job_url, key).json()["status"] == "succeeded",
            "the async job sent after Redis came back never ran",
        )
    finally:
        deployment.stop()
        for server in (redis_server, locals().get("restarted")):
            if server is not None:
                server.stop()
