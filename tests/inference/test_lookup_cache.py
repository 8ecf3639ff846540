"""The version look-up cache: bounded, never keeps a miss, forgets a model when it changes, and an expired
entry is served to every caller but one while that one reloads it (a refresh never stalls the calls in
flight)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection
from rest_framework.test import APIClient

from inference import services
from inference.services import GateClosed, VersionNotFound, target_find
from marketplace import services as marketplace_services
from marketplace.models import Model
from portal.models import ApiKey
from tests.marketplace.conftest import onnx_model_bytes, upload_file

from . import builders


def find(owner="alice", name="tiny", *, user=None, number=None, to_run=False):
    return target_find(owner=owner, name=name, number=number, user=user, to_run=to_run)


@pytest.mark.django_db
def test_a_miss_is_not_kept_and_a_model_created_after_it_is_found_at_once(alice):
    for _ in range(3):
        with pytest.raises(VersionNotFound):
            find(name="not-yet")
    assert len(services._targets) == 0

    builders.publish(owner=alice, name="not-yet", data=onnx_model_bytes())
    assert find(name="not-yet").number == 1


@pytest.mark.django_db
def test_the_cache_never_grows_past_its_bound(alice, settings, django_assert_num_queries):
    settings.INFERENCE_LOOKUP_CACHE_ENTRIES = 3
    for index in range(5):
        builders.publish(owner=alice, name=f"model-{index}", data=onnx_model_bytes())
        find(name=f"model-{index}")
        assert len(services._targets) <= 3
    assert len(services._targets) == 3
    with django_assert_num_queries(0):  # the three most recently used are kept
        for index in (2, 3, 4):
            find(name=f"model-{index}")
    with django_assert_num_queries(2):  # the least recently used went: loaded again (model, versions)
        find(name="model-0")


@pytest.mark.django_db
def test_a_model_made_private_or_gated_or_deleted_counts_at_once(alice, bob, settings):
    settings.INFERENCE_LOOKUP_CACHE_SECONDS = 3600
    version = builders.publish(owner=alice, name="tiny", data=onnx_model_bytes())
    model = version.model
    assert find(user=bob, to_run=True).model_id == model.pk

    marketplace_services.model_update(model=model, gated=True)
    with pytest.raises(GateClosed):
        find(user=bob, to_run=True)

    marketplace_services.model_update(model=model, visibility="private")
    with pytest.raises(VersionNotFound):
        find(user=bob)
    assert find(user=alice).visibility == "private"

    marketplace_services.model_delete(model=Model.objects.get(pk=model.pk))
    with pytest.raises(VersionNotFound):
        find(user=alice)


@pytest.mark.django_db(transaction=True)
def test_a_version_published_by_the_worker_is_seen_at_once(alice, settings, celery_worker_process):
    settings.INFERENCE_LOOKUP_CACHE_SECONDS = 3600
    builders.publish(owner=alice, name="tiny", data=onnx_model_bytes())
    assert find().number == 1

    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION="Bearer " + ApiKey.issue(user=alice, name="up", scopes=["upload"])[1]
    )
    response = client.post(
        "/api/v1/models/alice/tiny/versions",
        {"file": upload_file(onnx_model_bytes(2.0), "tiny.onnx")},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["number"] == 2
    # Validated in the worker process: its change reaches this process through Redis, not the cache's expiry.
    assert find().number == 2
    assert find().versions == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_an_expired_entry_is_served_while_one_caller_reloads_it(alice, settings, monkeypatch):
    settings.INFERENCE_LOOKUP_CACHE_SECONDS = 0.2
    builders.publish(owner=alice, name="tiny", data=onnx_model_bytes())
    cached = find()
    time.sleep(0.3)  # expired

    real_load = services._target_load
    reloads, reload_started, release = [], threading.Event(), threading.Event()

    def slow_load(**names):
        reloads.append(names)
        reload_started.set()
        assert release.wait(10)
        return real_load(**names)

    monkeypatch.setattr(services, "_target_load", slow_load)
    reloaded = []

    def reloading_caller():
        try:
            reloaded.append(find())
        finally:
            connection.close()

    reloader = threading.Thread(target=reloading_caller)
    reloader.start()
    try:
        assert reload_started.wait(10)
        started = time.monotonic()
        served = [find() for _ in range(16)]
        waited = time.monotonic() - started
    finally:
        release.set()
        reloader.join(10)

    assert waited < 0.5, f"callers waited {waited:.2f} s for another caller's reload"
    assert all(target == cached for target in served)
    assert len(reloads) == 1  # only the first caller past the expiry reloaded
    assert reloaded[0].version_id == cached.version_id
    with_reload_done = time.monotonic()
    assert find() == cached
    assert time.monotonic() - with_reload_done < 0.5  # the reloaded entry is fresh again
    assert len(reloads) == 1
