"""GET /api/v1/predictions[/<id>] and POST /api/v1/predictions/<id>/cancel."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from django.utils import timezone

from inference import ledger
from inference.models import Prediction
from portal.models import UsageDay

pytestmark = pytest.mark.django_db


def record(user, version, status="succeeded", **fields) -> Prediction:
    return Prediction.objects.create(
        user=user,
        version=version,
        status=status,
        created_at=timezone.now(),
        finished_at=timezone.now() if status in {"succeeded", "failed", "canceled"} else None,
        **fields,
    )


def auth(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def test_the_list_shows_only_the_callers_predictions(client, alice, bob, alice_key, mixed):
    mine = record(alice, mixed, outputs=[{"name": "y", "datatype": "FP32", "shape": [1], "data": [1.0]}])
    record(bob, mixed)
    body = client.get("/api/v1/predictions", **auth(alice_key)).json()
    assert body["count"] == 1
    [item] = body["results"]
    assert item["id"] == str(mine.id)
    assert item["model"] == "alice/mixed" and item["version"] == 1 and item["status"] == "succeeded"
    assert item["outputs"][0]["data"] == [1.0]
    assert item["url"].endswith(f"/api/v1/predictions/{mine.id}")


def test_the_list_filters_by_status(client, alice, alice_key, mixed):
    record(alice, mixed, status="failed", error="boom")
    record(alice, mixed)
    body = client.get("/api/v1/predictions?status=failed", **auth(alice_key)).json()
    assert [p["error"] for p in body["results"]] == ["boom"]


def test_someone_elses_prediction_is_404(client, alice, bob_key, mixed):
    theirs = record(alice, mixed)
    assert client.get(f"/api/v1/predictions/{theirs.id}", **auth(bob_key)).status_code == 404
    assert client.post(f"/api/v1/predictions/{theirs.id}/cancel", **auth(bob_key)).status_code == 404
    assert client.get(f"/api/v1/predictions/{uuid.uuid4()}", **auth(bob_key)).status_code == 404


def test_anonymous_callers_see_no_predictions(client):
    assert client.get("/api/v1/predictions").status_code == 401


def test_large_outputs_are_kept_in_a_file_and_served_back(client, alice, alice_key, mixed, settings):
    settings.PREDICTION_INLINE_OUTPUT_BYTES = 100

    prediction = record(alice, mixed, status="running")
    ledger.finish(
        [
            ledger.Ended(
                id=str(prediction.id),
                status="succeeded",
                model_id=mixed.model_id,
                outputs={"y": np.arange(100, dtype=np.float32).reshape(1, 100)},
                finished_at=timezone.now(),
            )
        ]
    )
    prediction.refresh_from_db()
    assert prediction.outputs is None and prediction.outputs_file.name.endswith(".json")
    assert prediction.bytes_out > 100
    body = client.get(f"/api/v1/predictions/{prediction.id}", **auth(alice_key)).json()
    assert body["outputs"][0]["data"] == list(range(100))
    assert UsageDay.objects.get(user=alice).bytes_out == prediction.bytes_out


@pytest.mark.parametrize("status", ["queued", "running"])
def test_a_queued_or_running_prediction_can_be_canceled(client, alice, alice_key, mixed, status):
    prediction = record(alice, mixed, status=status)
    response = client.post(f"/api/v1/predictions/{prediction.id}/cancel", **auth(alice_key))
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    prediction.refresh_from_db()
    assert prediction.status == "canceled" and prediction.finished_at is not None
    row = UsageDay.objects.get(user=alice)  # a canceled request counts, its compute does not
    assert (row.requests, row.succeeded, row.compute_ms) == (1, 0, 0)


def test_a_finished_prediction_cannot_be_canceled(client, alice, alice_key, mixed):
    prediction = record(alice, mixed)
    response = client.post(f"/api/v1/predictions/{prediction.id}/cancel", **auth(alice_key))
    assert response.status_code == 409
    assert "already succeeded" in response.json()["detail"]


def test_a_canceled_job_is_not_run_when_its_message_arrives(alice, mixed, run_job):
    prediction = record(alice, mixed, status="canceled")
    run_job(prediction.id)
    prediction.refresh_from_db()
    assert prediction.status == "canceled" and prediction.attempts == 0 and prediction.outputs is None


def test_staff_see_predictions_read_only_and_filtered_by_status(admin_client, alice, mixed):
    succeeded = record(alice, mixed)
    failed = record(alice, mixed, status="failed", error="boom")
    listing = admin_client.get("/admin/inference/prediction/?status__exact=succeeded").content.decode()
    assert str(succeeded.pk) in listing and str(failed.pk) not in listing
    assert admin_client.get("/admin/inference/prediction/add/").status_code == 403
