"""A request body over the limit gets a JSON 413 on both APIs, never an HTML 400."""

import pytest

pytestmark = pytest.mark.django_db

PREDICT = "/api/v1/models/alice/anything/predict"
BIG_JSON = '{"inputs": {"x": [' + ",".join(["1.0"] * 2000) + "]}}"


@pytest.fixture
def small_limit(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000


def test_it_answers_413_in_json_on_api_v1(alice_client, small_limit):
    response = alice_client.post(PREDICT, BIG_JSON, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is over the limit of 1000 bytes."}


def test_it_answers_413_in_json_on_v2(client, small_limit):
    response = client.post("/v2/models/alice/anything/infer", BIG_JSON, content_type="application/json")
    assert response.status_code == 413
    assert response.json() == {"error": "The request body is over the limit of 1000 bytes."}


def test_a_body_under_the_limit_goes_through(alice_client, small_limit):
    response = alice_client.post(PREDICT, '{"inputs": {"x": [1.0]}}', content_type="application/json")
    assert response.status_code == 404  # the view read it: there is no such model
    assert response.json() == {"detail": "No model alice/anything to run."}


def test_pages_keep_djangos_own_handling(client, small_limit):
    response = client.post("/accounts/login/", {"username": "x" * 2000, "password": "y"})
    assert response.status_code in (400, 403)
