"""Model files built in the suite (nothing downloaded), upload helpers, tight validation limits."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from functools import cache

import pytest

# The worker process is started from this environment: keep its validation children small and quick.
os.environ.setdefault("MODEL_VALIDATION_MEMORY_MB", "1536")
os.environ.setdefault("MODEL_VALIDATION_TIMEOUT_SECONDS", "40")


# --- valid models -------------------------------------------------------------------------------------------


@cache
def onnx_model_bytes(bias: float = 0.0) -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10, "weights")
    offset = numpy_helper.from_array(np.full(3, bias, dtype=np.float32), "offset")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "weights"], ["product"]),
            helper.make_node("Add", ["product", "offset"], ["scores"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 3])],
        initializer=[weights, offset],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def tiny_torch_module():
    import torch

    from .torch_modules import Tiny

    torch.manual_seed(0)
    return Tiny().eval()


@cache
def torchscript_bytes(traced: bool = True) -> bytes:
    import torch

    module = tiny_torch_module()
    compiled = torch.jit.trace(module, torch.zeros(1, 4)) if traced else torch.jit.script(module)
    buffer = io.BytesIO()
    torch.jit.save(compiled, buffer)
    return buffer.getvalue()


@cache
def torch_export_bytes() -> bytes:
    import torch

    program = torch.export.export(
        tiny_torch_module(), (torch.zeros(2, 4),), dynamic_shapes={"features": {0: torch.export.Dim("batch")}}
    )
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


# --- hostile files ------------------------------------------------------------------------------------------


class CreatesMarker:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def marker_pickle(marker: str, protocol: int = pickle.DEFAULT_PROTOCOL) -> bytes:
    return pickle.dumps(CreatesMarker(marker), protocol=protocol)


def torch_save_of_module() -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(tiny_torch_module(), buffer)
    return buffer.getvalue()


def torchscript_with_payload(marker: str) -> bytes:
    """A real TorchScript archive whose data.pkl is replaced by a pickle that would create `marker`."""
    source = zipfile.ZipFile(io.BytesIO(torchscript_bytes()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename.endswith("/data.pkl"):
                data = marker_pickle(marker, protocol=2)
            target.writestr(info.filename, data)
    return out.getvalue()


def onnx_with(nodes, initializers, *, domains=(), inputs=None, outputs=None) -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes,
        "hostile",
        inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", "m"])],
        outputs or [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "m"])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), *[helper.make_opsetid(d, 1) for d in domains]]
    )
    model.ir_version = 8
    return model.SerializeToString()


def onnx_with_external_data(location: str) -> bytes:
    from onnx import TensorProto, helper

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value=location)
    return onnx_with([helper.make_node("Add", ["x", "w"], ["y"])], [tensor])


def onnx_constant_of_shape_terabytes() -> bytes:
    from onnx import TensorProto, helper

    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [1 << 20, 1 << 20])
    return onnx_with(
        [
            helper.make_node(
                "ConstantOfShape",
                ["shape"],
                ["big"],
                value=helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
            ),
            helper.make_node("Add", ["x", "big"], ["y"]),
        ],
        [shape],
    )


def onnx_huge_initializer() -> bytes:
    from onnx import TensorProto, helper

    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    del tensor.dims[:]
    tensor.dims.extend([1 << 31, 1 << 31])  # 2^62 elements claimed, 4 bytes present
    tensor.ClearField("float_data")
    tensor.raw_data = b"\0\0\0\0"
    return onnx_with([helper.make_node("Add", ["x", "w"], ["y"])], [tensor])


def onnx_unknown_domain() -> bytes:
    from onnx import helper

    return onnx_with(
        [helper.make_node("Detonate", ["x"], ["y"], domain="evil.example")], [], domains=["evil.example"]
    )


def zip_bomb_like_a_torch_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/data.pkl", pickle.dumps({}, protocol=2))
        archive.writestr("model/constants.pkl", pickle.dumps((), protocol=2))
        archive.writestr("model/code/__torch__.py", "class Model: pass\n")
        archive.writestr("model/version", "3\n")
        with archive.open("model/data/0", "w", force_zip64=True) as entry:
            chunk = bytes(1 << 20)
            for _ in range(64):
                entry.write(chunk)
    return out.getvalue()


# --- helpers ------------------------------------------------------------------------------------------------


def upload_file(content: bytes, name: str = "model.onnx"):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


@pytest.fixture
def upload_key(alice):
    from portal.models import ApiKey

    _key, plaintext = ApiKey.issue(user=alice, name="uploads", scopes=["read", "upload"])
    return plaintext


@pytest.fixture
def api(upload_key):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {upload_key}")
    return client


@pytest.fixture
def publish(alice):
    """Create a ready model directly (no worker): for catalog tests that are not about validation."""
    from marketplace import services
    from marketplace.models import Model, ModelVersion

    def make(name: str = "tiny", *, owner=None, content: bytes | None = None, fmt: str = "onnx", **fields):
        stored = services.store_upload(file=upload_file(content or onnx_model_bytes()), limit=1 << 30)
        version = services.model_create(owner=owner or alice, name=name, stored=stored, **fields)
        signature = {
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
        }
        ModelVersion.objects.filter(pk=version.pk).update(status="ready", format=fmt, signature=signature)
        Model.objects.filter(pk=version.model_id).update(latest_format=fmt)
        return Model.objects.get(pk=version.model_id)

    return make
