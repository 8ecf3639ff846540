"""A dependency that is down answers 503 + Retry-After, never a 500 (issue 19).

Every error here is raised by a real client pointed at a port nobody listens on: psycopg through Django's
backend, redis-py through django-redis, kombu through Celery's broker connection. Nothing is mocked.
"""

from __future__ import annotations

import json
import sys
import uuid
from contextlib import contextmanager

import pytest
from django.db import connections
from django.test import RequestFactory

from portal.outages import DATABASE, REDIS, TASK_QUEUE, outage_of
from tests.conftest import free_port


def closed_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def error_from(action) -> BaseException:
    try:
        action()
    except Exception as exc:  # noqa: BLE001 - the test wants whatever the real client raised
        return exc
    raise AssertionError("the client reached a server on a closed port")


def database_error_from_closed_port() -> BaseException:
    from django.db.utils import load_backend

    settings_dict = {**connections["default"].settings_dict, "HOST": "127.0.0.1", "PORT": free_port()}
    backend = load_backend(settings_dict["ENGINE"])
    unreachable = backend.DatabaseWrapper(settings_dict, alias="unreachable")
    return error_from(unreachable.ensure_connection)


@contextmanager
def database_down():
    """The default connection pointed at a closed port, as a server that stopped; put back after."""
    connection = connections["default"]
    connection.close()
    saved = connection.settings_dict["HOST"], connection.settings_dict["PORT"]
    connection.settings_dict["HOST"], connection.settings_dict["PORT"] = "127.0.0.1", free_port()
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["HOST"], connection.settings_dict["PORT"] = saved


@contextmanager
def broker_down():
    """This process's Celery app publishing to a closed port (kombu keeps a pool per broker URL: the app's
    cached references are dropped, so it picks the pool of the URL in force)."""
    from portal.celery import app

    def reset_pools():
        app._pool = None
        app.amqp._producer_pool = None

    saved = app.conf.broker_write_url  # publishing uses it, else broker_url
    reset_pools()
    app.conf.broker_write_url = closed_redis_url()
    try:
        yield
    finally:
        reset_pools()
        app.conf.broker_write_url = saved


@pytest.fixture
def redis_down(settings):
    point_cache_at_closed_port(settings)


def point_cache_at_closed_port(settings) -> None:
    """The cache (django-redis) pointed at a closed port."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": closed_redis_url(),
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient", "SOCKET_CONNECT_TIMEOUT": 1},
        }
    }


# --- what counts as an outage ---


@pytest.mark.django_db
def test_a_database_that_refuses_connections_is_a_database_outage():
    error = database_error_from_closed_port()
    from django.db.utils import OperationalError

    assert isinstance(error, OperationalError)
    assert outage_of(error).dependency == DATABASE


def test_redis_refusing_connections_is_a_cache_outage_through_redis_py_and_django_redis(redis_down):
    import redis
    from django.core.cache import cache

    direct = error_from(redis.Redis.from_url(closed_redis_url(), socket_connect_timeout=1).ping)
    wrapped = error_from(lambda: cache.get("anything"))
    assert isinstance(direct, redis.exceptions.ConnectionError)
    assert outage_of(direct).dependency == REDIS
    assert outage_of(wrapped).dependency == REDIS


def test_a_broker_that_refuses_connections_is_a_task_queue_outage():
    from kombu import Connection

    def connect():
        with Connection(closed_redis_url(), connect_timeout=1) as connection:
            connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=2)

    error = error_from(connect)
    assert outage_of(error).dependency == TASK_QUEUE


def test_other_errors_are_not_outages():
    assert outage_of(ValueError("bad input")) is None
    assert outage_of(None) is None


# --- what a caller sees with PostgreSQL down ---


def assert_outage_answer(response, dependency: str, message_key: str) -> None:
    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) > 0
    body = json.loads(response.content)
    assert body["unavailable"] == dependency
    assert "retry" in body[message_key]
    # No host, port or credential of the dependency is told to the caller.
    assert "127.0.0.1" not in response.content.decode()
    assert (
        connections["default"].settings_dict["PORT"] is None
        or str(connections["default"].settings_dict["PORT"]) not in response.content.decode()
    )


@pytest.mark.django_db(transaction=True)
def test_with_the_database_down_the_apis_answer_503_and_recover_without_a_restart(client):
    # A fresh name: catalog look-ups, a miss included, are cached for a few seconds in each process.
    v2_model_url = f"/v2/models/alice/nothing-{uuid.uuid4().hex[:8]}"
    with database_down():
        catalog = client.get("/api/v1/models")
        v2_model = client.get(v2_model_url)
        assert_outage_answer(catalog, DATABASE, "detail")
        assert_outage_answer(v2_model, DATABASE, "error")
        assert set(v2_model.json()) == {"error", "unavailable"}  # the Open Inference Protocol's form
    assert client.get("/api/v1/models").status_code == 200
    assert client.get(v2_model_url).status_code == 404  # answered again: no such model


@pytest.mark.django_db(transaction=True)
def test_with_the_database_down_pages_show_the_temporarily_unavailable_page(client):
    with database_down():
        page = client.get("/")
    assert page.status_code == 503
    assert int(page["Retry-After"]) > 0
    assert page["Content-Type"].startswith("text/html")
    text = page.content.decode()
    assert "Temporarily unavailable" in text
    assert "database" in text
    assert "127.0.0.1" not in text
    assert client.get("/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_readiness_turns_503_while_the_database_is_down_and_200_after(client, celery_worker_process):
    import time

    from inference.scheduling import queue

    deadline = time.monotonic() + 30
    while not queue.serving() and time.monotonic() < deadline:
        time.sleep(0.1)
    with database_down():
        down = client.get("/v2/health/ready")
    assert down.status_code == 503
    assert down.json()["checks"]["database"] is False
    # Ready again once the worker's next heartbeat (every second) is seen; the database answers at once.
    deadline = time.monotonic() + 30
    while (after := client.get("/v2/health/ready")).status_code != 200 and time.monotonic() < deadline:
        assert after.json()["checks"]["database"] is True
        time.sleep(0.2)
    assert after.status_code == 200, after.json()


@pytest.mark.django_db
def test_an_outage_raised_outside_any_view_is_a_503_not_a_500():
    """Errors raised in middleware (a session saved while PostgreSQL is down) reach Django's 500 handler."""
    from portal.views import server_error

    error = database_error_from_closed_port()
    factory = RequestFactory()
    answers = {}
    for path in ("/api/v1/models", "/account/keys"):
        try:
            raise error
        except Exception:
            assert sys.exc_info()[1] is error
            answers[path] = server_error(factory.get(path))
    assert_outage_answer(answers["/api/v1/models"], DATABASE, "detail")
    assert answers["/account/keys"].status_code == 503
    assert b"Temporarily unavailable" in answers["/account/keys"].content


# --- what a caller sees with Redis down ---


@pytest.mark.django_db
def test_with_redis_down_an_api_call_that_needs_it_answers_503_naming_the_cache(client, settings, alice):
    from portal.models import ApiKey

    raw_key = ApiKey.issue(user=alice, name="test", scopes=["read"])[1]
    point_cache_at_closed_port(settings)
    response = client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    assert_outage_answer(response, REDIS, "detail")


@pytest.mark.django_db
def test_readiness_names_the_cache_when_redis_is_down(client, settings, redis_down):
    response = client.get("/v2/health/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"] is False


# --- gRPC ---


@pytest.mark.django_db(transaction=True)
def test_with_the_database_down_grpc_answers_unavailable_with_retry_after_and_recovers():
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from inference.protocols.grpc_service import server_create

    # The server's threads close their connections after each call: none is left open at the teardown.
    shared_settings = connections["default"].settings_dict
    saved_max_age, shared_settings["CONN_MAX_AGE"] = shared_settings["CONN_MAX_AGE"], 0
    server, port = server_create(address="127.0.0.1:0", threads=2)
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            request = service_pb2.ModelMetadataRequest(name=f"alice/nothing-{uuid.uuid4().hex[:8]}")
            with database_down(), pytest.raises(grpc.RpcError) as down:
                stub.ModelMetadata(request, timeout=20)
            with pytest.raises(grpc.RpcError) as after:
                stub.ModelMetadata(request, timeout=20)
    finally:
        server.stop(grace=None)
        shared_settings["CONN_MAX_AGE"] = saved_max_age
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "database" in down.value.details()
    assert "127.0.0.1" not in down.value.details()
    assert int(dict(down.value.trailing_metadata())["retry-after"]) > 0
    assert after.value.code() == grpc.StatusCode.NOT_FOUND  # answered again: no such model
