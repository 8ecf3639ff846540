"""tritonclient.grpc, unchanged, against a real `manage.py grpcserver` child process and the worker."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inference.models import Prediction
from portal.models import ApiKey
from portal.services import quota_set
from tests.conftest import ChildProcess, free_port

from . import builders
from .conftest import assert_same, local_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


class GrpcServer(ChildProcess):
    def __init__(self, log_path):
        super().__init__(log_path)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.spawn(["manage", "grpcserver", "--host", "127.0.0.1", "--port", str(self.port)])
        client = grpcclient.InferenceServerClient(url=self.address)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"grpcserver exited:\n{self.log()}")
            try:
                if client.is_server_live():
                    return
            except InferenceServerException:
                time.sleep(0.2)
        raise RuntimeError(f"grpcserver did not come up:\n{self.log()}")


@pytest.fixture(scope="module")
def grpc_server(django_db_setup, django_db_blocker, tmp_path_factory):
    server = GrpcServer(tmp_path_factory.mktemp("grpc") / "grpcserver.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def client(grpc_server):
    return grpcclient.InferenceServerClient(url=grpc_server.address)


def unique(prefix: str) -> str:
    # A fresh name per test: the server caches catalog look-ups for a few seconds, across tests.
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def mixed_model(alice):
    return builders.publish(owner=alice, name=unique("mixed"), data=builders.mixed_onnx())


def bearer(key: str) -> dict:
    return {"authorization": f"Bearer {key}"}


def plus_one_input(shape=(1, 3)) -> list:
    tensor = grpcclient.InferInput("x", list(shape), "FP32")
    tensor.set_data_from_numpy(np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    return [tensor]


def status_of(call) -> tuple[grpc.StatusCode | None, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()
    # tritonclient reports the code as its name, "StatusCode.NOT_FOUND".
    return getattr(grpc.StatusCode, caught.value.status().removeprefix("StatusCode.")), caught.value.message()


def test_the_server_is_live_and_ready_and_says_who_it_is(client, celery_worker_process):
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata(as_json=True)
    assert metadata["name"] == "modelport"
    assert "binary_tensor_data" in metadata["extensions"]


def test_model_metadata_and_readiness(client, celery_worker_process, alice_key, mixed_model):
    name = mixed_model.model.slug
    metadata = client.get_model_metadata(name, headers=bearer(alice_key), as_json=True)
    assert metadata["name"] == name
    assert metadata["versions"] == ["1"]
    assert metadata["platform"] == "onnxruntime_onnx"
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]} == {
        "x": "FP32",
        "h": "FP16",
        "flag": "BOOL",
        "ids": "INT64",
        "text": "BYTES",
        "small": "UINT8",
    }
    assert metadata["inputs"][0]["shape"] == ["-1", "3"]  # int64 in the proto: JSON strings
    assert client.is_model_ready(name, headers=bearer(alice_key))
    assert client.is_model_ready(name, model_version="1", headers=bearer(alice_key))


def test_infer_fp32_int64_bool_and_more_matches_onnx_runtime(
    client, celery_worker_process, alice_key, mixed_model
):
    inputs = builders.mixed_inputs(batch=3, seed=5)
    datatypes = {"x": "FP32", "h": "FP16", "flag": "BOOL", "ids": "INT64", "text": "BYTES", "small": "UINT8"}
    infer_inputs = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), datatypes[name])
        tensor.set_data_from_numpy(array)
        infer_inputs.append(tensor)
    result = client.infer(mixed_model.model.slug, infer_inputs, headers=bearer(alice_key))
    expected = local_run(builders.mixed_onnx(), inputs)
    for name, array in expected.items():
        got = result.as_numpy(name)
        assert got.shape == array.shape, name
        assert_same(array, got)
    assert result.get_response().model_version == "1"

    # Asking for some outputs only.
    wanted = [grpcclient.InferRequestedOutput("idsum"), grpcclient.InferRequestedOutput("notflag")]
    result = client.infer(mixed_model.model.slug, infer_inputs, outputs=wanted, headers=bearer(alice_key))
    assert [o.name for o in result.get_response().outputs] == ["idsum", "notflag"]
    np.testing.assert_array_equal(result.as_numpy("idsum"), inputs["ids"].sum(axis=1))
    np.testing.assert_array_equal(result.as_numpy("notflag"), ~inputs["flag"])

    # The call is recorded like any other, as a gRPC one.
    deadline = time.monotonic() + 15
    while (
        Prediction.objects.filter(source=Prediction.Source.GRPC).count() < 2 and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    records = Prediction.objects.filter(source=Prediction.Source.GRPC, version=mixed_model)
    assert records.count() == 2
    assert {r.status for r in records} == {"succeeded"}


def test_a_wrong_key_is_unauthenticated(client, alice, mixed_model):
    code, message = status_of(
        lambda: client.infer(mixed_model.model.slug, plus_one_input(), headers=bearer("mp_nope_nope"))
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "API key" in message
    code, _ = status_of(lambda: client.infer(mixed_model.model.slug, plus_one_input()))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_key_without_the_predict_scope_is_permission_denied(client, alice, mixed_model):
    _, read_only = ApiKey.issue(user=alice, name="read", scopes=["read"])
    code, message = status_of(
        lambda: client.infer(mixed_model.model.slug, plus_one_input(), headers=bearer(read_only))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "predict" in message


def test_metadata_needs_no_key_but_a_key_sent_needs_the_read_scope(client, alice, mixed_model):
    name = mixed_model.model.slug
    assert client.get_model_metadata(name, as_json=True)["name"] == name
    _, predict_only = ApiKey.issue(user=alice, name="predict", scopes=["predict"])
    code, message = status_of(lambda: client.get_model_metadata(name, headers=bearer(predict_only)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "'read'" in message


def test_a_model_still_validating_is_unavailable_with_retry_after(client, alice, alice_key):
    from marketplace.models import ModelVersion

    version = builders.publish(owner=alice, name=unique("fresh"), data=builders.plus_one_onnx())
    ModelVersion.objects.filter(pk=version.pk).update(status=ModelVersion.Status.VALIDATING)
    code, message = status_of(
        lambda: client.infer(version.model.slug, plus_one_input(), headers=bearer(alice_key))
    )
    assert code == grpc.StatusCode.UNAVAILABLE
    assert message == f"Version 1 of {version.model.slug} is validating; retry in a few seconds."


def test_another_users_private_model_is_not_found(
    client, celery_worker_process, alice, bob, bob_key, alice_key
):
    version = builders.publish(
        owner=alice, name=unique("secret"), data=builders.plus_one_onnx(), visibility="private"
    )
    name = version.model.slug
    for call in (
        lambda: client.infer(name, plus_one_input(), headers=bearer(bob_key)),
        lambda: client.get_model_metadata(name, headers=bearer(bob_key)),
        lambda: client.is_model_ready(name, headers=bearer(bob_key)),
        lambda: client.get_model_metadata(name),
    ):
        code, message = status_of(call)
        assert code == grpc.StatusCode.NOT_FOUND
        assert name in message
    # Its owner runs it.
    result = client.infer(name, plus_one_input(), headers=bearer(alice_key))
    np.testing.assert_array_equal(result.as_numpy("y"), [[1.0, 2.0, 3.0]])


def test_a_wrong_shape_or_input_is_invalid_argument(client, celery_worker_process, alice, alice_key):
    name = builders.publish(owner=alice, name=unique("plus"), data=builders.plus_one_onnx()).model.slug
    code, message = status_of(lambda: client.infer(name, plus_one_input((1, 4)), headers=bearer(alice_key)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "dimension 1 must be 3" in message
    wrong = grpcclient.InferInput("z", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 3), dtype=np.float32))
    code, message = status_of(lambda: client.infer(name, [wrong], headers=bearer(alice_key)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "'z'" in message
    code, message = status_of(
        lambda: client.infer(name, plus_one_input(), model_version="7", headers=bearer(alice_key))
    )
    assert code == grpc.StatusCode.NOT_FOUND


def test_a_quota_hit_is_resource_exhausted_with_retry_after(
    grpc_server, celery_worker_process, alice, alice_key
):
    name = builders.publish(owner=alice, name=unique("quota"), data=builders.plus_one_onnx()).model.slug
    quota_set(user=alice, requests_per_day=2, requests_per_minute=1000)
    client = grpcclient.InferenceServerClient(url=grpc_server.address)
    for _ in range(2):
        client.infer(name, plus_one_input(), headers=bearer(alice_key))
    code, message = status_of(lambda: client.infer(name, plus_one_input(), headers=bearer(alice_key)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "requests per day" in message

    # The raw channel shows the trailing metadata tritonclient does not expose.
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(
            model_name=name,
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name="x",
                    datatype="FP32",
                    shape=[1, 3],
                    contents=service_pb2.InferTensorContents(fp32_contents=[1, 2, 3]),
                )
            ],
        )
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, metadata=bearer(alice_key).items())
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(caught.value.trailing_metadata())
    assert 0 < int(trailers["retry-after"]) <= 86400


def test_typed_contents_work_as_well_as_raw_bytes(grpc_server, celery_worker_process, alice, alice_key):
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    name = builders.publish(owner=alice, name=unique("typed"), data=builders.plus_one_onnx()).model.slug
    with grpc.insecure_channel(grpc_server.address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(
            model_name=name,
            inputs=[
                service_pb2.ModelInferRequest.InferInputTensor(
                    name="x",
                    datatype="FP32",
                    shape=[2, 3],
                    contents=service_pb2.InferTensorContents(fp32_contents=[0, 1, 2, 3, 4, 5]),
                )
            ],
        )
        response = stub.ModelInfer(request, metadata=bearer(alice_key).items())
    assert response.outputs[0].name == "y"
    assert list(response.outputs[0].shape) == [2, 3]
    values = np.frombuffer(response.raw_output_contents[0], dtype="<f4")
    np.testing.assert_array_equal(values, [1, 2, 3, 4, 5, 6])


def test_strings_in_a_bytes_input_named_text_reach_a_text_model(
    client, celery_worker_process, alice, alice_key
):
    from .text_builders import (
        local_embeddings,
        publish_text_model,
        tiny_encoder_onnx,
        wordpiece_tokenizer_json,
    )

    name = unique("encoder")
    publish_text_model(owner=alice, name=name, task="feature-extraction")
    texts = ["the cat sat on the mat", "stock markets fell"]
    expected, _ = local_embeddings(tiny_encoder_onnx(), wordpiece_tokenizer_json(), texts)
    text = grpcclient.InferInput("text", [len(texts)], "BYTES")
    text.set_data_from_numpy(np.array(texts, dtype=np.object_))
    result = client.infer(f"alice/{name}", [text], headers=bearer(alice_key))
    np.testing.assert_allclose(result.as_numpy("embeddings"), expected, atol=1e-4)


def test_a_gated_model_is_permission_denied_until_approved_and_again_after_revocation(
    client, celery_worker_process, alice, bob, bob_key
):
    from marketplace import services as catalog
    from marketplace.models import AccessRequest, Model

    version = builders.publish(owner=alice, name=unique("gated"), data=builders.plus_one_onnx())
    Model.objects.filter(pk=version.model_id).update(gated=True)
    name = version.model.slug
    code, message = status_of(lambda: client.infer(name, plus_one_input(), headers=bearer(bob_key)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "gated" in message and "access-requests" in message
    assert client.get_model_metadata(name, headers=bearer(bob_key)).name == name  # the card stays public

    access, _ = catalog.access_request_create(model=Model.objects.get(pk=version.model_id), user=bob)
    catalog.access_request_decide(request=access, approve=True)
    result = client.infer(name, plus_one_input(), headers=bearer(bob_key))
    np.testing.assert_array_equal(result.as_numpy("y"), [[1.0, 2.0, 3.0]])

    catalog.access_request_decide(request=AccessRequest.objects.get(pk=access.pk), approve=False)
    code, _ = status_of(lambda: client.infer(name, plus_one_input(), headers=bearer(bob_key)))
    assert code == grpc.StatusCode.PERMISSION_DENIED


def test_the_benchmarks_grpc_client_counts_every_call_from_its_threads(
    grpc_server, celery_worker_process, alice, alice_key
):
    from inference.benchmarking.grpc_load import GrpcTarget, grpc_unreachable, measure_grpc

    name = builders.publish(owner=alice, name=unique("bench"), data=builders.plus_one_onnx()).model.slug
    quota_set(user=alice, requests_per_day=10_000, requests_per_minute=10_000)
    inputs = {"x": np.arange(3, dtype=np.float32).reshape(1, 3)}
    assert grpc_unreachable(grpc_server.address) == ""
    served = measure_grpc(
        GrpcTarget(grpc_server.address, name, inputs, bearer(alice_key)), requests=24, concurrency=4, warmup=8
    )
    assert (served.count, served.errors, served.first_error) == (24, 0, "")
    assert 0 < served.p50 <= served.p99 and served.rate > 0

    wrong_key = GrpcTarget(grpc_server.address, name, inputs, bearer("mp_nope_nope"))
    refused = measure_grpc(wrong_key, requests=4, concurrency=2, warmup=0)
    assert (refused.count, refused.errors) == (0, 4)
    assert refused.first_error.startswith("StatusCode.UNAUTHENTICATED")

    nowhere = f"127.0.0.1:{free_port()}"
    assert grpc_unreachable(nowhere, timeout=2).startswith(f"nothing answers gRPC at {nowhere} (StatusCode.")


def test_the_benchmark_command_adds_grpc_rows_or_says_why_it_could_not(
    grpc_server, celery_worker_process, alice, alice_key
):
    from io import StringIO

    from inference.benchmarking.report import GRPC, Results, format_table
    from inference.management.commands.benchmark import Case, Command, Progress

    name = builders.publish(owner=alice, name=unique("bench"), data=builders.plus_one_onnx()).model.slug
    quota_set(user=alice, requests_per_day=10_000, requests_per_minute=10_000)
    case = Case("tiny", "x + 1", name, b"", "x", np.ones((1, 3), dtype=np.float32), [1, 3])
    command = Command(stdout=StringIO(), stderr=StringIO())
    command.requests, command.max_seconds = 12, 30.0

    command.grpc_url, served = grpc_server.address, Results()
    command.measure_grpc_rows(case, alice_key, served, Progress(2, StringIO()))
    assert {level: (row.count, row.errors) for (_, _, level), row in served.rows.items()} == {
        1: (12, 0),
        3: (12, 0),
    }

    command.grpc_url, absent = f"127.0.0.1:{free_port()}", Results()
    command.measure_grpc_rows(case, alice_key, absent, Progress(2, StringIO()))
    assert absent.rows == {}
    reason = absent.missing[f"{GRPC} (tiny)"]
    assert reason.startswith(f"nothing answers gRPC at {command.grpc_url}")
    assert reason.endswith("start `python manage.py grpcserver` or pass --grpc-url")
    assert format_table(absent)[-1] == f"{GRPC} (tiny): not measured: {reason}"


def slow_inputs(trips: int) -> list:
    """The slow model's inputs: about a microsecond a trip."""
    x = grpcclient.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.zeros(1, dtype=np.float32))
    n = grpcclient.InferInput("n", [1], "INT64")
    n.set_data_from_numpy(np.array([trips], dtype=np.int64))
    return [x, n]


def test_a_call_past_the_clients_deadline_is_canceled_and_costs_nothing(
    grpc_server, celery_worker_process, alice, alice_key
):
    from django.db.models import Sum

    from portal.models import UsageDay
    from portal.quotas import current_windows

    name = builders.publish(owner=alice, name=unique("slow"), data=builders.slow_onnx()).model.slug
    client = grpcclient.InferenceServerClient(url=grpc_server.address)
    assert client.infer(name, slow_inputs(3), headers=bearer(alice_key)).as_numpy("y").tolist() == [3.0]
    counted = {w.redis_key: w.used for w in current_windows(alice)}

    # Two calls ask for seconds of work with half a second to wait: the clients give up, and so does the
    # server (a call no runner has taken yet is not run at all: test_scheduler).
    late = []

    def call_with_deadline():
        try:
            client.infer(name, slow_inputs(4_000_000), headers=bearer(alice_key), client_timeout=0.5)
        except InferenceServerException as exc:
            late.append(exc.status())

    threads = [threading.Thread(target=call_with_deadline) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert late == ["StatusCode.DEADLINE_EXCEEDED"] * 2

    def settled():
        calls = Prediction.objects.filter(user=alice, version__model__name=name.split("/")[1])
        return calls.count() == 3 and not calls.filter(status__in=["queued", "running"]).exists()

    deadline = time.monotonic() + 30
    while not settled():
        assert time.monotonic() < deadline, "the canceled calls were never recorded"
        time.sleep(0.2)
    calls = Prediction.objects.filter(user=alice, version__model__name=name.split("/")[1])
    assert sorted(calls.values_list("status", flat=True)) == ["canceled", "canceled", "succeeded"]
    assert all("deadline" in p.error for p in calls.filter(status="canceled"))
    # Not charged: the quota windows count what they counted before, the usage ledger has three records of
    # which one succeeded (the only one whose compute counts).
    assert {w.redis_key: w.used for w in current_windows(alice)} == counted
    usage = UsageDay.objects.filter(user=alice).aggregate(
        requests=Sum("requests"), succeeded=Sum("succeeded")
    )
    assert usage == {"requests": 3, "succeeded": 1}
    # The runner is free again for the next call.
    assert client.infer(name, slow_inputs(5), headers=bearer(alice_key)).as_numpy("y").tolist() == [5.0]


def test_a_model_failure_is_answered_as_the_outcome_table_says_on_every_protocol(
    grpc_server, celery_worker_process, alice, alice_key
):
    """inference.protocols.outcomes: the prediction `failed` on /api/v1, 400 on /v2, INVALID_ARGUMENT."""
    from django.test import Client

    signature = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}], "outputs": []}
    name = builders.publish(owner=alice, name=unique("broken"), data=b"not a model", signature=signature)
    slug = name.model.slug
    auth = {"HTTP_AUTHORIZATION": f"Bearer {alice_key}"}
    rest = Client().post(
        f"/api/v1/models/{slug}/predict", {"inputs": {"x": [1.0]}}, content_type="application/json", **auth
    )
    assert rest.status_code == 200 and rest.json()["status"] == "failed"
    error = rest.json()["error"]
    assert "could not open the model" in error
    v2 = Client().post(
        f"/v2/models/{slug}/infer",
        {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]},
        content_type="application/json",
        **auth,
    )
    assert v2.status_code == 400 and v2.json()["error"] == error
    x = grpcclient.InferInput("x", [1], "FP32")
    x.set_data_from_numpy(np.ones(1, dtype=np.float32))
    client = grpcclient.InferenceServerClient(url=grpc_server.address)
    code, message = status_of(lambda: client.infer(slug, [x], headers=bearer(alice_key)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and message == error


def test_a_call_the_client_cancels_is_canceled_at_once_and_costs_nothing(
    grpc_server, celery_worker_process, alice, alice_key
):
    from portal.quotas import current_windows

    name = builders.publish(owner=alice, name=unique("slow"), data=builders.slow_onnx()).model.slug
    client = grpcclient.InferenceServerClient(url=grpc_server.address)
    assert client.infer(name, slow_inputs(3), headers=bearer(alice_key)).as_numpy("y").tolist() == [3.0]
    counted = {w.redis_key: w.used for w in current_windows(alice)}
    call = client.async_infer(
        name, slow_inputs(4_000_000), lambda result, error: None, headers=bearer(alice_key)
    )
    model = name.split("/")[1]
    time.sleep(1)  # the call is on a runner now: it would run for seconds more
    call.cancel()
    canceled_at = time.monotonic()
    while not Prediction.objects.filter(user=alice, version__model__name=model, status="canceled").exists():
        assert time.monotonic() < canceled_at + 3, "the server did not cancel the call when the client did"
        time.sleep(0.05)
    record = Prediction.objects.get(user=alice, version__model__name=model, status="canceled")
    assert "hung up" in record.error
    assert {w.redis_key: w.used for w in current_windows(alice)} == counted
