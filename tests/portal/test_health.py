import pytest

pytestmark = pytest.mark.django_db


def test_live(client):
    response = client.get("/v2/health/live")
    assert response.status_code == 200
    assert response.json() == {"live": True}


@pytest.mark.django_db(transaction=True)
def test_ready_checks_database_broker_and_a_serving_worker(client, celery_worker_process):
    import time

    from inference.scheduling import queue

    deadline = time.monotonic() + 30
    while not queue.serving() and time.monotonic() < deadline:
        time.sleep(0.1)
    response = client.get("/v2/health/ready")
    assert response.status_code == 200
    assert response.json() == {
        "ready": True,
        "checks": {"database": True, "broker": True, "cache": True, "worker": True},
    }


def test_ready_says_503_without_a_worker_heartbeat(client, settings):
    settings.INFERENCE_REDIS_PREFIX = "mp:nobody-serves-this:"  # no supervisor heartbeats under this prefix
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {"database": True, "broker": True, "cache": True, "worker": False},
    }


def test_ready_says_503_when_the_broker_is_down(client, settings):
    settings.INFERENCE_REDIS_PREFIX = "mp:nobody-serves-this:"
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json() == {
        "ready": False,
        "checks": {"database": True, "broker": False, "cache": True, "worker": False},
    }
