"""Fixtures for the access tests: fresh counters and caches, keys, limits, and a catalog version to predict
on."""

from __future__ import annotations

import pytest
from django.core.cache import cache

from portal import quotas
from portal.models import ApiKey
from portal.services import quota_set


@pytest.fixture(autouse=True)
def fresh_counters():
    # Redis outlives each test's rolled-back database: start every test with no cached keys or counters.
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def fresh_redis_scripts():
    # Registered Lua scripts keep the client they were registered on: a test that swaps the client starts and
    # ends with none registered.
    quotas.forget_redis_scripts()
    yield
    quotas.forget_redis_scripts()


@pytest.fixture(params=["redis", "sql"])
def quota_backend(request, settings):
    settings.QUOTA_BACKEND = request.param
    return request.param


def issue_key(user, scopes=("read", "predict", "upload"), **options) -> tuple[ApiKey, str]:
    return ApiKey.issue(user=user, name=options.pop("name", "test key"), scopes=list(scopes), **options)


def bearer(raw_key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw_key}"}


def limit(user, **limits):
    return quota_set(user=user, **limits)


@pytest.fixture
def version(alice):
    """A ready model version (its file is never opened by the accounting under test)."""
    from marketplace.models import Model, ModelVersion

    model = Model.objects.create(owner=alice, name="digits", task="image-classification")
    return ModelVersion.objects.create(
        model=model,
        number=1,
        file="models/ab/" + "ab" * 32,
        format="onnx",
        size=10,
        sha256="ab" * 32,
        status="ready",
    )
