"""The data plane (`python manage.py dataplane`), as a program and a browser meet it: the same answers as the
site's own stack (gunicorn), every admitted call recorded once, a browser's calls still under its session and
CSRF, and bodies over the limit refused before they are read."""

from __future__ import annotations

import http.client
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from django.conf import settings
from django.db.models import Sum

from inference.models import Prediction
from inference.scheduling import queue
from portal.models import UsageDay
from portal.quotas import invalidate_limits, quota_for

from ..conftest import WebServer
from . import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Headers whose values differ between two servers or two calls, though both send them.
VARYING = {
    "date",
    "server",
    "connection",
    "x-request-id",
    "ratelimit-remaining",
    "ratelimit-reset",
    "keep-alive",
}


@pytest.fixture
def gunicorn_web(tmp_path):
    server = WebServer(tmp_path / "gunicorn.log", workers=1, threads=4, server="gunicorn")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def digits(alice):
    # A name of its own: the live servers' look-up caches outlive the rows of earlier tests.
    return builders.publish(owner=alice, name=f"digits-{uuid.uuid4().hex[:8]}", data=builders.digits_onnx())


def infer_body(batch: int = 1) -> dict:
    pixels = np.random.default_rng(batch).random((batch, 64), dtype=np.float32)
    return {
        "inputs": [
            {"name": "pixels", "datatype": "FP32", "shape": [batch, 64], "data": pixels.ravel().tolist()}
        ]
    }


# Fields that differ between two calls whichever server answers: ids, times, and the model's run count (the
# recorder writes the calls just made in between).
VOLATILE = ("id", "latency_ms", "runs")


def without_ids(body):
    if isinstance(body, dict):
        return {k: without_ids(v) for k, v in body.items() if k not in VOLATILE}
    return body


def calls(name: str) -> list[tuple]:
    model = f"models/alice/{name}"
    return [
        ("POST", f"/v2/{model}/infer", infer_body(2), True),
        ("POST", f"/v2/{model}/versions/1/infer", infer_body(), True),
        ("POST", f"/api/v1/{model}/predict", {"inputs": {"pixels": [[0.5] * 64]}}, True),
        ("POST", f"/api/v1/{model}/predict", {"inputs": {"nope": [[1.0]]}}, True),  # 400
        ("POST", f"/v2/{model}/infer", b"{not json", True),  # 400
        ("POST", "/v2/models/alice/nothing/infer", infer_body(), True),  # 404
        ("POST", f"/v2/{model}/infer", infer_body(), False),  # 401
        ("POST", f"/api/v1/{model}/predict", {"inputs": {"pixels": [[0.5] * 64]}}, False),  # 401
        ("GET", f"/v2/{model}", None, True),
        ("GET", f"/api/v1/{model}", None, True),
    ]


def call(url: str, method: str, path: str, body, key: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = "application/json"
    return requests.request(method, url + path, data=data, headers=headers, timeout=60)


def test_it_answers_as_the_sites_own_stack_does(
    live_web, gunicorn_web, celery_worker_process, alice_key, digits
):
    for method, path, body, keyed in calls(digits.model.name):
        key = alice_key if keyed else None
        fast, site = (
            call(live_web.url, method, path, body, key),
            call(gunicorn_web.url, method, path, body, key),
        )
        assert fast.status_code == site.status_code, (path, fast.text, site.text)
        assert without_ids(fast.json()) == without_ids(site.json()), path
        assert {h.lower() for h in fast.headers} - VARYING == {h.lower() for h in site.headers} - VARYING, (
            path
        )
        assert fast.headers["Content-Type"] == site.headers["Content-Type"]
        assert len(fast.headers["X-Request-ID"]) >= 16
    # The caller's own request id comes back, as the site gives it back.
    echoed = requests.post(
        f"{live_web.url}/v2/models/alice/{digits.model.name}/infer",
        json=infer_body(),
        headers={"Authorization": f"Bearer {alice_key}", "X-Request-ID": "trace-42"},
        timeout=60,
    )
    assert echoed.status_code == 200 and echoed.headers["X-Request-ID"] == "trace-42"


def test_every_admitted_call_is_recorded_once(live_web, celery_worker_process, alice, alice_key, digits):
    quota = quota_for(alice)
    quota.requests_per_minute = 1000
    quota.save()
    invalidate_limits([alice.pk])
    paths = [
        f"/v2/models/alice/{digits.model.name}/infer",
        f"/api/v1/models/alice/{digits.model.name}/predict",
    ]
    bodies = [infer_body(), {"inputs": {"pixels": [[0.25] * 64]}}]

    def one(i: int) -> int:
        return call(live_web.url, "POST", paths[i % 2], bodies[i % 2], alice_key).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(one, range(120)))
    assert statuses == [200] * 120
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        Prediction.objects.filter(user=alice).count() < 120 or queue.records_pending()
    ):
        time.sleep(0.1)
    records = Prediction.objects.filter(user=alice)
    assert records.count() == 120
    assert set(records.values_list("status", flat=True)) == {"succeeded"}
    assert set(records.values_list("source", flat=True)) == {"api", "v2"}
    assert UsageDay.objects.filter(user=alice).aggregate(n=Sum("requests"))["n"] == 120


def test_a_browsers_call_keeps_its_session_and_csrf(live_web, celery_worker_process, alice, digits):
    browser = requests.Session()
    login_page = browser.get(f"{live_web.url}/accounts/login/", timeout=30)
    assert login_page.status_code == 200
    alice.set_password("a-long-passphrase-for-alice")
    alice.save()
    signed_in = browser.post(
        f"{live_web.url}/accounts/login/",
        data={
            "username": "alice",
            "password": "a-long-passphrase-for-alice",
            "csrfmiddlewaretoken": browser.cookies["csrftoken"],
        },
        headers={"Referer": f"{live_web.url}/accounts/login/"},
        timeout=30,
    )
    assert signed_in.status_code == 200 and "sessionid" in browser.cookies
    path = f"{live_web.url}/api/v1/models/alice/{digits.model.name}/predict"
    body = {"inputs": {"pixels": [[0.5] * 64]}}
    # A session's call without the CSRF token is refused, as on the site; with it, it runs as alice.
    refused = browser.post(path, json=body, timeout=30)
    assert refused.status_code == 403 and "CSRF" in refused.text
    answered = browser.post(
        path,
        json=body,
        headers={"X-CSRFToken": browser.cookies["csrftoken"], "Referer": live_web.url},
        timeout=60,
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "succeeded"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not Prediction.objects.filter(user=alice, source="web").exists():
        time.sleep(0.1)
    assert Prediction.objects.filter(user=alice, source="web").count() == 1


def test_a_body_over_the_limit_is_refused_before_it_is_read(live_web, alice_key, digits):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    connection = http.client.HTTPConnection("127.0.0.1", live_web.port, timeout=30)
    connection.putrequest("POST", f"/v2/models/alice/{digits.model.name}/infer")
    connection.putheader("Authorization", f"Bearer {alice_key}")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(limit * 4))
    connection.endheaders()
    connection.send(b"{" + b" " * (limit + 10))  # more than the limit, far less than declared
    answer = connection.getresponse()
    assert answer.status == 413
    assert json.loads(answer.read()) == {"error": f"The request body is over the limit of {limit} bytes."}
    connection.close()


def test_a_quota_refusal_reads_as_the_sites(
    live_web, gunicorn_web, celery_worker_process, alice, alice_key, digits
):
    quota = quota_for(alice)
    quota.requests_per_minute = 1
    quota.save()
    invalidate_limits([alice.pk])
    path = f"/v2/models/alice/{digits.model.name}/infer"
    first = call(live_web.url, "POST", path, infer_body(), alice_key)
    fast = call(live_web.url, "POST", path, infer_body(), alice_key)
    site = call(gunicorn_web.url, "POST", path, infer_body(), alice_key)
    assert first.status_code == 200, first.text
    assert fast.status_code == site.status_code == 429
    assert fast.json()["limit"] == site.json()["limit"] == "requests_per_minute"
    assert fast.json().keys() == site.json().keys()
    assert fast.headers["RateLimit-Remaining"] == site.headers["RateLimit-Remaining"] == "0"
    assert {h.lower() for h in fast.headers} - VARYING == {h.lower() for h in site.headers} - VARYING
    assert int(fast.headers["Retry-After"]) > 0
