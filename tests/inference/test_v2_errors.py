"""Every /v2 error is `{"error": …}`, also those raised outside the views (inference.protocols.oip_errors)."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from portal.services import quota_set

from . import builders
from .conftest import post_json
from .test_v2 import oip_inputs

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_counters():
    cache.clear()
    yield
    cache.clear()


def test_a_quota_refusal_is_a_json_429_with_retry_after(client, alice, alice_key, mixed):
    quota_set(user=alice, requests_per_minute=0)
    body = {"inputs": oip_inputs(builders.mixed_inputs(batch=1))}
    response = post_json(client, "/v2/models/alice/mixed/infer", body, alice_key)
    assert response.status_code == 429
    refusal = response.json()
    assert refusal["limit"] == "requests_per_minute"
    assert "Quota exhausted" in refusal["error"]
    assert int(response["Retry-After"]) == refusal["retry_after"] >= 1
    assert response["RateLimit-Remaining"] == "0"


def test_a_wrong_method_is_a_json_405(client, mixed):
    response = client.post("/v2/models/alice/mixed", "{}", content_type="application/json")
    assert response.status_code == 405
    assert response.json() == {"error": "Method not allowed."}
    assert response["Allow"] == "GET"


def test_an_unknown_address_is_a_json_404_on_v2_and_an_html_page_elsewhere(client):
    response = client.get("/v2/no/such/thing")
    assert (response.status_code, response.json()) == (404, {"error": "Not found."})
    response = client.get("/no/such/page/")
    assert response.status_code == 404 and response["Content-Type"].startswith("text/html")


def test_a_private_model_stays_a_json_404_for_others(client, alice, bob_key):
    builders.publish(owner=alice, name="secret", data=builders.digits_onnx(), visibility="private")
    response = client.get("/v2/models/alice/secret", HTTP_AUTHORIZATION=f"Bearer {bob_key}")
    assert response.status_code == 404
    assert response.json() == {"error": "No model alice/secret to run."}


def test_with_redis_down_a_keyed_read_is_answered_from_the_database_and_a_call_is_refused_503(
    client, settings, alice_key, mixed
):
    from tests.portal.test_outages import point_cache_at_closed_port

    point_cache_at_closed_port(settings)
    # Degrade where it is safe: the key and the model are read from PostgreSQL.
    metadata = client.get("/v2/models/alice/mixed", HTTP_AUTHORIZATION=f"Bearer {alice_key}")
    assert metadata.status_code == 200, metadata.content[:300]
    assert metadata.json()["name"] == "alice/mixed"
    # Refuse where it is not: a call cannot be counted against its quota, so it is not let through.
    body = {"inputs": oip_inputs(builders.mixed_inputs(batch=1))}
    refused = post_json(client, "/v2/models/alice/mixed/infer", body, alice_key)
    assert refused.status_code == 503 and int(refused["Retry-After"]) > 0
    assert "cache" in refused.json()["error"]


def test_metadata_is_public_but_a_key_sent_for_it_needs_the_read_scope(client, alice, mixed):
    from portal.models import ApiKey

    predict_only = ApiKey.issue(user=alice, name="p", scopes=["predict"])[1]
    reader = ApiKey.issue(user=alice, name="r", scopes=["read"])[1]
    for path in ("/v2/models/alice/mixed", "/v2/models/alice/mixed/ready", "/v2/models/alice/mixed/stats"):
        assert client.get(path).status_code in (200, 503), path  # ready: 503 when no worker serves
        refused = client.get(path, HTTP_AUTHORIZATION=f"Bearer {predict_only}")
        assert refused.status_code == 403, path
        assert refused.json() == {"error": "This API key lacks the 'read' scope."}
        assert client.get(path, HTTP_AUTHORIZATION=f"Bearer {reader}").status_code in (200, 503), path


def test_a_model_still_validating_answers_409_with_retry_after(client, alice, bob, alice_key, bob_key):
    from marketplace.models import ModelVersion

    version = builders.publish(owner=alice, name="fresh", data=builders.mixed_onnx())
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.VALIDATING)
    body = {"inputs": oip_inputs(builders.mixed_inputs(batch=1))}
    for path in ("/v2/models/alice/fresh/infer", "/v2/models/alice/fresh/versions/1/infer"):
        response = post_json(client, path, body, alice_key)
        assert response.status_code == 409, path
        assert response.json() == {"error": "Version 1 of alice/fresh is validating; retry in a few seconds."}
        assert response["Retry-After"] == "5"
    named = post_json(
        client, "/api/v1/models/alice/fresh/predict", {"inputs": {"x": [[1.0, 2.0]]}}, alice_key
    )
    assert named.status_code == 409 and "is validating" in named.json()["detail"]
    assert named["Retry-After"] == "5"
    # A version that does not exist is still a 404; so is another user's private model, validating or not.
    assert post_json(client, "/v2/models/alice/fresh/versions/2/infer", body, alice_key).status_code == 404
    version.model.visibility = "private"
    version.model.save()
    assert post_json(client, "/v2/models/alice/fresh/infer", body, bob_key).status_code == 404
