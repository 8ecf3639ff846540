"""Fixtures for the inference tests: keys, published test models, and a clean slate for in-process caches."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import pytest

from inference import services
from marketplace.demo import DIGITS_PREPROCESSING
from portal.models import ApiKey

from . import builders


@pytest.fixture(autouse=True)
def fresh_lookup_caches():
    # Rows are recreated for every test with new ids: cached look-ups from an earlier test would be stale.
    services.targets_forget()
    yield
    services.targets_forget()


@pytest.fixture
def alice_key(alice) -> str:
    return ApiKey.issue(user=alice, name="test", scopes=["read", "predict"])[1]


@pytest.fixture
def bob_key(bob) -> str:
    return ApiKey.issue(user=bob, name="test", scopes=["read", "predict"])[1]


@pytest.fixture
def mixed(alice):
    return builders.publish(owner=alice, name="mixed", data=builders.mixed_onnx())


@pytest.fixture
def digits(alice):
    return builders.publish(
        owner=alice,
        name="digits",
        data=builders.digits_onnx(),
        task="image-classification",
        labels=[str(i) for i in range(10)],
        preprocessing=DIGITS_PREPROCESSING,
    )


def post_json(client, url: str, body, key: str | None = None, **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(url, data, content_type="application/json", **headers, **extra)


def local_run(data: bytes, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference: the same model in ONNX Runtime, in this process."""
    session = onnxruntime.InferenceSession(data)
    feed = {
        name: np.array([v.decode() for v in a.ravel()], dtype=object).reshape(a.shape)
        if a.dtype == object
        else a
        for name, a in inputs.items()
    }
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed), strict=True))


def assert_same(expected: np.ndarray, got: np.ndarray) -> None:
    if expected.dtype == object:
        expected = np.array([v.encode() if isinstance(v, str) else v for v in expected.ravel()], dtype=object)
        got = np.array(
            [v.encode() if isinstance(v, str) else v for v in np.asarray(got).ravel()], dtype=object
        )
        assert expected.tolist() == got.tolist()
    elif expected.dtype.kind in "biu":
        np.testing.assert_array_equal(np.asarray(got).reshape(expected.shape), expected)
    else:
        np.testing.assert_allclose(
            np.asarray(got, dtype=np.float64).reshape(expected.shape), expected, rtol=1e-5, atol=1e-5
        )


@pytest.fixture(scope="session")
def runner_pool():
    """A real runner pool in this process (runner processes and all), for tests that run jobs directly."""
    from inference.runners.supervisor import pool_from_settings

    pool = pool_from_settings("tests").start()
    yield pool
    pool.stop()


@pytest.fixture
def run_job(runner_pool):
    """`run_job(prediction_id)`: what the Celery task does, on the test's runner pool."""
    from functools import partial

    from inference.runners.supervisor import run_on
    from inference.services import prediction_execute

    def run(prediction_id) -> None:
        prediction_execute(prediction_id=str(prediction_id), run=partial(run_on, runner_pool))

    return run
