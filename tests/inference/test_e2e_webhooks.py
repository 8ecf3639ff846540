"""Webhooks through a live deployment (gunicorn and a Celery worker): a local receiver gets `start` and
`completed` of an async job, signed as the Standard Webhooks specification says; a failing receiver is tried
again, and every attempt shows in /api/v1/webhooks/deliveries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
import requests

from portal.models import ApiKey
from tests.conftest import ServingStack

from . import builders
from .test_webhooks import Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory):
    # The receiver listens on loopback: the deployment is told private targets are fine, and retries soon.
    stack = ServingStack(
        tmp_path_factory.mktemp("webhooks"), WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_RETRY_BASE_SECONDS="0.5"
    ).start()
    yield stack
    stack.stop()


@pytest.fixture
def receiver():
    receivers = []

    def start(statuses=(204,)) -> Receiver:
        receivers.append(Receiver(statuses))
        return receivers[-1]

    yield start
    for item in receivers:
        item.close()


def verify(secret: str, headers: dict, payload: bytes) -> bool:
    """The receiver's side of the Standard Webhooks specification ("Verifying webhooks"): HMAC-SHA256, keyed
    with the base64-decoded part of the secret after `whsec_`, over `{webhook-id}.{webhook-timestamp}.{body}`;
    the header lists space-separated `v1,<base64>` signatures, one of which must match."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + payload
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [
        item.split(",", 1)[1] for item in headers["webhook-signature"].split() if item.startswith("v1,")
    ]
    fresh = abs(time.time() - int(headers["webhook-timestamp"])) < 300
    return fresh and any(hmac.compare_digest(expected, signature) for signature in offered)


def wait_for(condition, seconds: float, message) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message() if callable(message) else message
        time.sleep(0.1)


def published(alice) -> str:
    # A fresh name per test: the deployment caches catalog look-ups for a few seconds, across tests.
    name = f"mixed-{uuid.uuid4().hex[:8]}"
    builders.publish(owner=alice, name=name, data=builders.mixed_onnx())
    return f"alice/{name}"


def predict_body() -> dict:
    inputs = builders.mixed_inputs(batch=1)
    return {
        name: [v.decode() for v in a.ravel()] if a.dtype == object else a.tolist()
        for name, a in inputs.items()
    }


def test_a_receiver_gets_start_and_completed_of_an_async_job_signed_with_the_callers_secret(
    stack, alice, receiver
):
    slug = published(alice)
    key = ApiKey.issue(user=alice, name="k", scopes=["read", "predict"])[1]
    auth = {"Authorization": f"Bearer {key}"}
    hook = receiver()
    response = requests.post(
        f"{stack.web.url}/api/v1/models/{slug}/predict",
        json={"inputs": predict_body(), "webhook": hook.url, "webhook_events_filter": ["start", "completed"]},
        headers={**auth, "Prefer": "respond-async"},
        timeout=30,
    )
    assert response.status_code == 202, response.text
    prediction_id = response.json()["id"]
    wait_for(lambda: len(hook.received) >= 2, 60, lambda: f"received {hook.received}\n{stack.logs()[-4000:]}")

    secret = requests.get(f"{stack.web.url}/api/v1/webhooks/secret", headers=auth, timeout=10).json()["key"]
    records = {}
    for headers, payload in hook.received:
        assert headers["content-type"] == "application/json"
        assert verify(secret, headers, payload), headers
        assert not verify("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, payload)
        record = json.loads(payload)
        assert record["id"] == prediction_id and record["model"] == slug
        records[record["status"]] = (headers["webhook-id"], record)
    assert set(records) == {"running", "succeeded"}, records.keys()  # start, then completed
    assert records["running"][0] != records["succeeded"][0]  # one message id per event
    assert {o["name"] for o in records["succeeded"][1]["outputs"]} >= {"y", "idsum"}
    assert len(hook.received) == 2  # no `output` event: the filter left it out

    deliveries = requests.get(
        f"{stack.web.url}/api/v1/webhooks/deliveries",
        params={"prediction": prediction_id},
        headers=auth,
        timeout=10,
    ).json()
    assert sorted((d["event"], d["attempt"], d["status_code"]) for d in deliveries) == [
        ("completed", 1, 204),
        ("start", 1, 204),
    ]


def test_a_failing_receiver_is_tried_again_with_the_same_message_and_each_attempt_is_recorded(
    stack, alice, receiver
):
    slug = published(alice)
    key = ApiKey.issue(user=alice, name="k", scopes=["read", "predict"])[1]
    auth = {"Authorization": f"Bearer {key}"}
    hook = receiver(statuses=(500, 204))
    # Synchronous: the caller waits for the result, and the webhook is told all the same.
    response = requests.post(
        f"{stack.web.url}/api/v1/models/{slug}/predict",
        json={"inputs": predict_body(), "webhook": hook.url, "webhook_events_filter": ["completed"]},
        headers=auth,
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.text
    prediction_id = response.json()["id"]
    wait_for(lambda: len(hook.received) >= 2, 60, lambda: f"received {hook.received}\n{stack.logs()[-4000:]}")

    (first, first_body), (second, second_body) = hook.received[:2]
    assert first["webhook-id"] == second["webhook-id"] and first_body == second_body
    secret = requests.get(f"{stack.web.url}/api/v1/webhooks/secret", headers=auth, timeout=10).json()["key"]
    assert verify(secret, second, second_body)

    def attempts():
        deliveries = requests.get(
            f"{stack.web.url}/api/v1/webhooks/deliveries",
            params={"prediction": prediction_id},
            headers=auth,
            timeout=10,
        ).json()
        return sorted((d["event"], d["attempt"], d["status_code"]) for d in deliveries)

    wait_for(lambda: len(attempts()) == 2, 10, lambda: f"recorded {attempts()}")
    assert attempts() == [("completed", 1, 500), ("completed", 2, 204)]
    time.sleep(1.5)  # a delivered event is not sent again
    assert len(hook.received) == 2
