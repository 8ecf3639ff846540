"""A gated model runs, on /api/v1 and /v2 alike, only for users its owner approved; a revocation holds
from the next call on. Through the real worker."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from marketplace.models import Model
from portal.models import ApiKey

from . import builders
from .conftest import post_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PREDICT = "/api/v1/models/alice/mixed/predict"
INFER = "/v2/models/alice/mixed/infer"
READY = "/v2/models/alice/mixed/ready"
REQUESTS = "/api/v1/models/alice/mixed/access-requests"


def v2_body() -> dict:
    inputs = builders.mixed_inputs(batch=1)
    datatypes = {"x": "FP32", "h": "FP16", "flag": "BOOL", "ids": "INT64", "text": "BYTES", "small": "UINT8"}
    return {
        "inputs": [
            {
                "name": name,
                "datatype": datatypes[name],
                "shape": list(array.shape),
                "data": [v.decode() for v in array.ravel()]
                if array.dtype == object
                else array.ravel().tolist(),
            }
            for name, array in inputs.items()
        ]
    }


def v1_body() -> dict:
    return {"inputs": v2_body()["inputs"]}


@pytest.fixture
def gated_mixed(alice):
    version = builders.publish(owner=alice, name="mixed", data=builders.mixed_onnx())
    Model.objects.filter(pk=version.model_id).update(gated=True, latest_format="onnx")
    return version


def answer(alice, access_id: int, decision: str) -> None:
    owner = APIClient()
    owner.force_authenticate(alice)
    response = owner.post(f"{REQUESTS}/{access_id}/{decision}")
    assert response.status_code == 200, response.content


def test_bob_gets_403_before_approval_200_after_and_403_again_after_revocation(
    client, celery_worker_process, gated_mixed, alice, bob, bob_key
):
    refused = post_json(client, PREDICT, v1_body(), bob_key)
    assert refused.status_code == 403
    assert "gated" in refused.json()["detail"] and REQUESTS in refused.json()["detail"]
    refused = post_json(client, INFER, v2_body(), bob_key)
    assert refused.status_code == 403 and REQUESTS in refused.json()["error"]
    assert client.get(READY, HTTP_AUTHORIZATION=f"Bearer {bob_key}").status_code == 403
    # The card stays public: metadata answers anyone, without a key.
    assert client.get("/v2/models/alice/mixed").status_code == 200

    asked = post_json(client, REQUESTS, {"reason": "benchmarking"}, bob_key)
    assert asked.status_code == 201
    answer(alice, asked.json()["id"], "approve")

    ran = post_json(client, PREDICT, v1_body(), bob_key)
    assert ran.status_code == 200, ran.content
    assert ran.json()["status"] == "succeeded"
    inferred = post_json(client, INFER, v2_body(), bob_key)
    assert inferred.status_code == 200, inferred.content
    assert {o["name"] for o in inferred.json()["outputs"]} >= {"y", "idsum"}
    assert client.get(READY, HTTP_AUTHORIZATION=f"Bearer {bob_key}").status_code == 200

    answer(alice, asked.json()["id"], "deny")
    assert post_json(client, PREDICT, v1_body(), bob_key).status_code == 403
    assert post_json(client, INFER, v2_body(), bob_key).status_code == 403


def test_the_owner_runs_a_gated_model_without_asking(client, celery_worker_process, gated_mixed, alice):
    key = ApiKey.issue(user=alice, name="k", scopes=["read", "predict"])[1]
    assert post_json(client, PREDICT, v1_body(), key).status_code == 200
    assert post_json(client, INFER, v2_body(), key).status_code == 200


def test_anonymous_visitors_still_see_the_card(client, gated_mixed):
    Model.objects.filter(pk=gated_mixed.model_id).update(description="A card for **everyone**.")
    page = client.get("/models/alice/mixed/")
    assert page.status_code == 200 and "A card for <strong>everyone</strong>." in page.content.decode()
    assert client.get("/api/v1/models/alice/mixed").json()["gated"] is True
