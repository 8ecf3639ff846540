"""`/metrics`: Prometheus text for loopback clients, or for the bearer of METRICS_TOKEN only (API.md)."""

import pytest

from portal import metrics

pytestmark = pytest.mark.django_db


def test_it_serves_prometheus_text_to_loopback_clients(client):
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    body = response.content.decode()
    assert "# TYPE modelport_upload_bytes_total counter" in body
    assert "# TYPE modelport_runners gauge" in body


def test_it_refuses_other_clients_without_a_token(client):
    response = client.get("/metrics", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 403
    assert "loopback" in response.content.decode()


def test_it_refuses_a_forwarded_client_behind_a_local_proxy(client, settings):
    settings.TRUSTED_PROXY_COUNT = 1
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="203.0.113.7")
    assert response.status_code == 403


def test_with_a_token_only_its_bearer_gets_them_even_from_loopback(client, settings):
    settings.METRICS_TOKEN = "scrape-me-please"
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 401
    wrong = client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_AUTHORIZATION="Bearer nope")
    assert wrong.status_code == 401 and wrong["WWW-Authenticate"] == "Bearer"
    right = client.get("/metrics", REMOTE_ADDR="203.0.113.7", HTTP_AUTHORIZATION="Bearer scrape-me-please")
    assert right.status_code == 200 and b"modelport_upload_bytes_total" in right.content


def test_model_labels_are_bounded(settings, monkeypatch):
    monkeypatch.setattr(metrics, "_labelled", set())
    settings.METRICS_MODEL_LABELS_MAX = 2
    assert [metrics.model_label(f"alice/m{i}") for i in range(4)] == [
        "alice/m0",
        "alice/m1",
        "other",
        "other",
    ]
    assert metrics.model_label("alice/m0") == "alice/m0"
    assert metrics.model_label(None) == "unknown"


def counted(client, line_start: str) -> float:
    body = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(line_start))


def test_a_request_for_no_model_counts_once_without_a_model_label(client, alice):
    from portal.models import ApiKey

    key = ApiKey.issue(user=alice, name="t", scopes=["read", "predict"])[1]
    series = 'modelport_requests_total{model="unknown",outcome="not_found",protocol="v1"}'
    before = counted(client, series)
    response = client.post(
        "/api/v1/models/alice/nothing/predict",
        {"inputs": {}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 404
    assert counted(client, series) == before + 1
    assert "alice/nothing" not in client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
