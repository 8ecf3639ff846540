"""Quotas end to end: a live multi-process web server and a real worker, many callers at once.

Every request goes through gunicorn (2 processes) and the worker; the counters live in the test run's Redis,
the ledger in its PostgreSQL. Each test waits until the worker has recorded what it ran before it ends.
"""

from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from onnx import TensorProto, helper

from inference.models import Prediction
from portal.models import ApiKey, Plan, UsageCounter, UsageDay
from portal.quotas import month_number
from portal.services import quota_set
from tests.inference import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BODY = {"inputs": {"x": [[1.0, 2.0, 3.0]]}}


@pytest.fixture
def plus_one(alice):
    data = builders.onnx_model(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [("x", TensorProto.FLOAT, [-1, 3])],
        [("y", TensorProto.FLOAT, [-1, 3])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    # A fresh name per test: the live processes cache catalog look-ups for a few seconds, across tests.
    return builders.publish(owner=alice, name=f"plus-one-{uuid.uuid4().hex[:8]}", data=data)


@pytest.fixture
def alice_key(alice):
    return ApiKey.issue(user=alice, name="e2e", scopes=["read", "predict"])


def predict(live_web, raw_key: str, version) -> requests.Response:
    return requests.post(
        f"{live_web.url}/api/v1/models/alice/{version.model.name}/predict",
        json=BODY,
        headers={"Authorization": f"Bearer {raw_key}"},
        timeout=90,
    )


def infer_v2(live_web, raw_key: str, version) -> requests.Response:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}]}
    return requests.post(
        f"{live_web.url}/v2/models/alice/{version.model.name}/infer",
        json=body,
        headers={"Authorization": f"Bearer {raw_key}"},
        timeout=90,
    )


def at_once(call, count: int) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def usage(live_web, raw_key: str) -> dict:
    response = requests.get(
        f"{live_web.url}/api/v1/usage", headers={"Authorization": f"Bearer {raw_key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_until_recorded(live_web, raw_key: str, requests_today: int, worker=None) -> dict:
    """The worker writes the ledger in batches: poll the usage API until today's row has them all."""
    deadline = time.monotonic() + 30
    while True:
        body = usage(live_web, raw_key)
        if body["days"][-1]["requests"] >= requests_today:
            return body
        assert time.monotonic() < deadline, (
            f"the ledger never reached {requests_today}: {body['days'][-1]}\n{worker.log() if worker else ''}"
        )
        time.sleep(0.2)


def split(responses) -> tuple[list, list]:
    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 429]
    assert len(ok) + len(refused) == len(responses), {r.status_code: r.text[:200] for r in responses}
    return ok, refused


def avoid_a_minute_boundary(margin: float = 20) -> None:
    if time.time() % 60 > 60 - margin:
        time.sleep(60.5 - time.time() % 60)


def test_exactly_the_daily_limit_is_served_to_60_concurrent_callers(
    live_web, celery_worker_process, alice, alice_key, plus_one
):
    key, raw_key = alice_key
    quota_set(user=alice, requests_per_day=20, requests_per_minute=1000)
    ok, refused = split(at_once(lambda: predict(live_web, raw_key, plus_one), 60))
    assert len(ok) == 20 and len(refused) == 40
    assert all(
        r.json()["status"] == "succeeded" and r.json()["outputs"][0]["data"] == [2.0, 3.0, 4.0] for r in ok
    )
    for response in refused:
        assert 0 < int(response.headers["Retry-After"]) <= 86400
        assert response.json()["limit"] == "requests_per_day"
        assert response.headers["RateLimit-Remaining"] == "0"
    assert all("RateLimit-Limit" in r.headers for r in ok)

    body = wait_until_recorded(live_web, raw_key, 20)
    assert body["used"]["requests_per_day"] == 20 and body["remaining"]["requests_per_day"] == 0
    assert body["days"][-1]["requests"] == 20 and body["days"][-1]["succeeded"] == 20
    assert Prediction.objects.filter(user=alice).count() == 20


def test_exactly_the_minute_limit_is_served_over_v2(
    live_web, celery_worker_process, alice, alice_key, plus_one
):
    key, raw_key = alice_key
    quota_set(user=alice, requests_per_minute=15, requests_per_day=1000)
    avoid_a_minute_boundary()
    ok, refused = split(at_once(lambda: infer_v2(live_web, raw_key, plus_one), 40))
    assert len(ok) == 15 and len(refused) == 25
    for response in refused:
        assert 0 < int(response.headers["Retry-After"]) <= 60
        assert response.json()["limit"] == "requests_per_minute"
        assert "requests per minute" in response.json()["error"]
    assert ok[0].json()["outputs"][0]["data"] == [2.0, 3.0, 4.0]
    body = wait_until_recorded(live_web, raw_key, 15, celery_worker_process)
    assert body["used"]["requests_per_minute"] == 15


def test_a_keys_cap_holds_under_concurrency(live_web, celery_worker_process, alice, plus_one):
    quota_set(user=alice, requests_per_day=1000, requests_per_minute=1000)
    capped, capped_raw = ApiKey.issue(
        user=alice, name="capped", scopes=["read", "predict"], requests_per_day=7
    )
    _, other_raw = ApiKey.issue(user=alice, name="other", scopes=["read", "predict"])
    ok, refused = split(at_once(lambda: predict(live_web, capped_raw, plus_one), 30))
    assert len(ok) == 7 and len(refused) == 23
    assert {r.json()["limit"] for r in refused} == {"key_requests_per_day"}
    assert (
        predict(live_web, other_raw, plus_one).status_code == 200
    )  # the user still has room through another key
    wait_until_recorded(live_web, other_raw, 8)
    assert UsageDay.objects.get(api_key=capped).requests == 7


def test_compute_is_charged_once_per_success_and_the_month_quota_refuses(
    live_web, celery_worker_process, alice, alice_key, plus_one
):
    key, raw_key = alice_key
    ok, refused = split(at_once(lambda: predict(live_web, raw_key, plus_one), 12))
    assert len(ok) == 12 and not refused
    wait_until_recorded(live_web, raw_key, 12)
    succeeded = Prediction.objects.filter(user=alice, status="succeeded")
    assert succeeded.count() == 12 and all(p.charged for p in succeeded)
    expected_ms = sum(math.ceil(p.compute_ms) for p in succeeded)
    charged = UsageCounter.objects.get(key=f"u:{alice.pk}:compute")
    assert (charged.window, charged.used) == (month_number(time.time()), expected_ms)
    assert UsageDay.objects.get(user=alice).compute_ms == pytest.approx(sum(p.compute_ms for p in succeeded))

    # The month's compute is now over a limit lower than what was charged: the next request is refused.
    quota_set(user=alice, compute_seconds_per_month=math.floor(expected_ms / 1000))
    refused = predict(live_web, raw_key, plus_one)
    assert refused.status_code == 429
    assert refused.json()["limit"] == "compute_seconds_per_month"
    assert int(refused.headers["Retry-After"]) > 0


def test_a_plan_changed_in_the_admin_applies_to_the_next_request(
    live_web, celery_worker_process, admin_client, alice, alice_key, plus_one
):
    from .test_admin import user_change_form

    key, raw_key = alice_key
    for _ in range(3):
        assert (
            predict(live_web, raw_key, plus_one).status_code == 200
        )  # the Free plan (the limits are now cached)
    tiny = Plan.objects.create(
        name="Tiny",
        requests_per_minute=100,
        requests_per_day=3,
        compute_seconds_per_month=100,
        max_upload_bytes=1024,
        max_private_models=1,
    )
    response = admin_client.post(
        f"/admin/auth/user/{alice.pk}/change/", user_change_form(alice, plan=tiny.pk)
    )
    assert response.status_code == 302
    refused = predict(live_web, raw_key, plus_one)
    assert refused.status_code == 429 and refused.json()["limit"] == "requests_per_day"
    assert refused.headers["RateLimit-Limit"] == "3"
    wait_until_recorded(live_web, raw_key, 3)


def test_a_revoked_key_stops_at_the_next_request(
    live_web, celery_worker_process, alice, alice_key, plus_one, alice_client
):
    key, raw_key = alice_key
    assert predict(live_web, raw_key, plus_one).status_code == 200
    assert alice_client.delete(f"/api/v1/keys/{key.pk}").status_code == 204
    responses = at_once(lambda: predict(live_web, raw_key, plus_one), 8)  # reaches both web processes
    assert {r.status_code for r in responses} == {401}
    wait_until_recorded(live_web, ApiKey.issue(user=alice, name="reader", scopes=["read"])[1], 1)
