"""The same ending answered as the outcome table (inference.outcomes) says, whichever protocol asked: /api/v1
and /v2 through the data plane, gRPC through `manage.py grpcserver` with tritonclient, all on one deployment
of their own whose runners may use 400 MB."""

from __future__ import annotations

import time
import uuid

import grpc
import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inference.models import Prediction
from portal.quotas import current_windows
from portal.services import quota_set
from tests.conftest import ServingStack

from . import builders
from .test_e2e_grpc import GrpcServer, bearer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# 8 GB of ones: far over the runners' 400 MB, so the kernel kills the runner inside its cgroup.
HUNGRY = 2_000_000_000


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory):
    stack = ServingStack(
        tmp_path_factory.mktemp("outcomes"),
        INFERENCE_RUNNER_MEMORY_MB="400",
        INFERENCE_RUNNER_RSS_BUDGET_MB="300",
        WEBHOOK_ALLOW_PRIVATE="1",
    ).start()
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def grpc_server(stack, tmp_path_factory):
    server = GrpcServer(tmp_path_factory.mktemp("outcomes-grpc") / "grpcserver.log")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in stack.env.items():
            patch.setenv(name, value)
        server.start()
    yield server
    server.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def records_of(user, slug: str, count: int = 0):
    """The user's records of the model, once `count` of them have landed (the recorder writes in batches)."""
    records = Prediction.objects.filter(user=user, version__model__name=slug.split("/")[1])
    deadline = time.monotonic() + 15
    while records.count() < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return records


def windows(user) -> dict[str, int]:
    return {window.redis_key: window.used for window in current_windows(user)}


def counted_again(before: dict[str, int], calls: int) -> dict[str, int]:
    return {key: used + calls for key, used in before.items()}


def grpc_status(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return getattr(grpc.StatusCode, caught.value.status().removeprefix("StatusCode.")), caught.value.message()


def test_a_runner_killed_at_its_memory_limit_is_a_503_naming_the_limit_on_every_protocol(
    stack, grpc_server, alice, alice_key
):
    quota_set(user=alice, requests_per_minute=1000, requests_per_day=1000)
    slug = builders.publish(owner=alice, name=unique("hungry"), data=builders.memory_hungry_onnx()).model.slug
    auth = {"Authorization": f"Bearer {alice_key}"}
    before = windows(alice)

    rest = requests.post(
        f"{stack.web.url}/api/v1/models/{slug}/predict",
        json={"inputs": {"n": [HUNGRY]}},
        headers=auth,
        timeout=60,
    )
    assert rest.status_code == 503 and rest.headers["Retry-After"] == "1", rest.text
    message = rest.json()["detail"]
    assert message == "The model exceeded its memory limit: it needed more than the 400 MB a runner may use."

    v2 = requests.post(
        f"{stack.web.url}/v2/models/{slug}/infer",
        json={"inputs": [{"name": "n", "datatype": "INT64", "shape": [1], "data": [HUNGRY]}]},
        headers=auth,
        timeout=60,
    )
    assert v2.status_code == 503 and v2.headers["Retry-After"] == "1", v2.text
    assert v2.json()["error"] == message

    n = grpcclient.InferInput("n", [1], "INT64")
    n.set_data_from_numpy(np.array([HUNGRY], dtype=np.int64))
    client = grpcclient.InferenceServerClient(url=grpc_server.address)
    code, details = grpc_status(lambda: client.infer(slug, [n], headers=bearer(alice_key)))
    assert (code, details) == (grpc.StatusCode.UNAVAILABLE, message)

    # A job answered from its record (a webhook makes the call one) is answered the same: the record keeps
    # the kind, not only the message.
    job = requests.post(
        f"{stack.web.url}/api/v1/models/{slug}/predict",
        json={"inputs": {"n": [HUNGRY]}, "webhook": "http://127.0.0.1:9/hook"},
        headers=auth,
        timeout=60,
    )
    assert job.status_code == 503 and job.json()["detail"] == message, job.text

    records = records_of(alice, slug, 4)
    assert sorted(records.values_list("status", "failure")) == [("failed", "over_limits")] * 4
    assert all(record.error == message for record in records)
    # It ran, up to the limit: it counts in the caller's quota like any call that ran.
    assert windows(alice) == counted_again(before, 4)


def test_a_model_that_fails_on_its_inputs_is_the_prediction_on_api_v1_and_a_400_elsewhere(
    stack, grpc_server, alice, alice_key
):
    quota_set(user=alice, requests_per_minute=1000, requests_per_day=1000)
    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}], "outputs": []}
    slug = builders.publish(
        owner=alice, name=unique("broken"), data=b"not a model", signature=signature
    ).model.slug
    auth = {"Authorization": f"Bearer {alice_key}"}
    before = windows(alice)

    rest = requests.post(
        f"{stack.web.url}/api/v1/models/{slug}/predict",
        json={"inputs": {"x": [1.0]}},
        headers=auth,
        timeout=60,
    )
    assert rest.status_code == 200 and rest.json()["status"] == "failed", rest.text
    message = rest.json()["error"]
    assert "could not open the model" in message

    v2 = requests.post(
        f"{stack.web.url}/v2/models/{slug}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        headers=auth,
        timeout=60,
    )
    assert v2.status_code == 400 and "Retry-After" not in v2.headers and v2.json()["error"] == message

    x = grpcclient.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.ones(1, dtype=np.float32))
    client = grpcclient.InferenceServerClient(url=grpc_server.address)
    code, details = grpc_status(lambda: client.infer(slug, [x], headers=bearer(alice_key)))
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, message)

    records = records_of(alice, slug, 3)
    assert sorted(records.values_list("status", "failure")) == [("failed", "model_error")] * 3
    assert windows(alice) == counted_again(before, 3)


def test_the_callers_bad_input_is_a_400_on_every_protocol_and_counts_nothing(
    stack, grpc_server, alice, alice_key
):
    slug = builders.publish(owner=alice, name=unique("plus"), data=builders.plus_one_onnx()).model.slug
    auth = {"Authorization": f"Bearer {alice_key}"}
    before = windows(alice)

    rest = requests.post(
        f"{stack.web.url}/api/v1/models/{slug}/predict",
        json={"inputs": {"x": [[1.0, 2.0]]}},
        headers=auth,
        timeout=60,
    )
    assert rest.status_code == 400 and "dimension 1 must be 3" in rest.text
    v2 = requests.post(
        f"{stack.web.url}/v2/models/{slug}/infer",
        json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]},
        headers=auth,
        timeout=60,
    )
    assert v2.status_code == 400 and "dimension 1 must be 3" in v2.json()["error"]
    x = grpcclient.InferInput("x", [1, 2], "FP32")
    x.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    client = grpcclient.InferenceServerClient(url=grpc_server.address)
    code, details = grpc_status(lambda: client.infer(slug, [x], headers=bearer(alice_key)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "dimension 1 must be 3" in details

    assert not records_of(alice, slug).exists()
    assert windows(alice) == before
