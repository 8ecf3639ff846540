"""tritonclient.http, unchanged, against the live web server and worker: binary data on and off."""

from __future__ import annotations

import numpy as np
import pytest
import tritonclient.http as httpclient

from . import builders
from .conftest import assert_same, local_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DATATYPES = {"x": "FP32", "h": "FP16", "flag": "BOOL", "ids": "INT64", "text": "BYTES", "small": "UINT8"}


def triton(live_web) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(url=live_web.url.removeprefix("http://"))


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_gets_the_same_numbers_as_onnx_runtime(
    live_web, celery_worker_process, alice_key, mixed, binary
):
    client = triton(live_web)
    headers = {"Authorization": f"Bearer {alice_key}"}
    assert client.is_server_live()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata("alice/mixed", headers=headers)
    assert metadata["platform"] == "onnxruntime_onnx"
    assert client.is_model_ready("alice/mixed", headers=headers)

    inputs = builders.mixed_inputs(batch=4, seed=21)
    infer_inputs = []
    for name, array in inputs.items():
        tensor = httpclient.InferInput(name, list(array.shape), DATATYPES[name])
        tensor.set_data_from_numpy(array, binary_data=binary)
        infer_inputs.append(tensor)
    outputs = [httpclient.InferRequestedOutput(o["name"], binary_data=binary) for o in metadata["outputs"]]
    result = client.infer("alice/mixed", infer_inputs, outputs=outputs, headers=headers)
    expected = local_run(builders.mixed_onnx(), inputs)
    for name, array in expected.items():
        got = result.as_numpy(name)
        assert got.shape == array.shape
        assert_same(array, got)

    # tritonclient's default (no outputs named): every output as binary data.
    result = client.infer("alice/mixed", infer_inputs, headers=headers, model_version="1")
    for name, array in expected.items():
        assert_same(array, result.as_numpy(name))


def test_tritonclient_sees_errors_as_exceptions_with_the_servers_message(
    live_web, celery_worker_process, alice_key, mixed
):
    from tritonclient.utils import InferenceServerException

    client = triton(live_web)
    tensor = httpclient.InferInput("x", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 2), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="dimension 1 must be 3"):
        client.infer("alice/mixed", [tensor], headers={"Authorization": f"Bearer {alice_key}"})
