import pytest

pytestmark = pytest.mark.django_db


def test_live(client):
    response = client.get("/v2/health/live")
    assert response.status_code == 200
    assert response.json() == {"live": True}


def test_ready_checks_database_and_broker(client):
    response = client.get("/v2/health/ready")
    assert response.status_code == 200
    assert response.json() == {"ready": True, "checks": {"database": True, "broker": True}}


def test_ready_says_503_when_the_broker_is_down(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {"ready": False, "checks": {"database": True, "broker": False}}
