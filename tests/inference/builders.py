"""Small models built in the suite (no downloads), and their catalog rows."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import onnx
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from onnx import TensorProto, helper

from marketplace.models import Model, ModelVersion

ONNX_DATATYPES = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
}


def onnx_model(nodes, inputs, outputs, initializers=(), opset=17) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_signature(data: bytes) -> dict:
    model = onnx.load_from_string(data)

    def describe(values):
        return [
            {
                "name": v.name,
                "datatype": ONNX_DATATYPES[v.type.tensor_type.elem_type],
                "shape": [
                    d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim
                ],
            }
            for v in values
        ]

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def mixed_onnx() -> bytes:
    """Several inputs and outputs of mixed datatypes, dynamic batch dims."""
    F, H, B, L, S, U = (
        TensorProto.FLOAT,
        TensorProto.FLOAT16,
        TensorProto.BOOL,
        TensorProto.INT64,
        TensorProto.STRING,
        TensorProto.UINT8,
    )
    return onnx_model(
        [
            helper.make_node("Mul", ["x", "two"], ["x2"]),
            helper.make_node("Add", ["x2", "one"], ["y"]),
            helper.make_node("Add", ["h", "h"], ["h2"]),
            helper.make_node("Not", ["flag"], ["notflag"]),
            helper.make_node("ReduceSum", ["ids", "axis1"], ["idsum"], keepdims=0),
            helper.make_node("Identity", ["text"], ["text_out"]),
            helper.make_node("Identity", ["small"], ["small_out"]),
        ],
        [
            ("x", F, [-1, 3]),
            ("h", H, [-1, 2]),
            ("flag", B, [-1]),
            ("ids", L, [-1, 2]),
            ("text", S, [-1]),
            ("small", U, [-1]),
        ],
        [
            ("y", F, [-1, 3]),
            ("h2", H, [-1, 2]),
            ("notflag", B, [-1]),
            ("idsum", L, [-1]),
            ("text_out", S, [-1]),
            ("small_out", U, [-1]),
        ],
        [
            helper.make_tensor("two", F, [], [2.0]),
            helper.make_tensor("one", F, [], [1.0]),
            helper.make_tensor("axis1", L, [1], [1]),
        ],
    )


def mixed_inputs(batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    text = np.empty(batch, dtype=object)
    text[:] = [f"héllo {i}".encode() for i in range(batch)]
    return {
        "x": rng.normal(size=(batch, 3)).astype(np.float32),
        "h": rng.normal(size=(batch, 2)).astype(np.float16),
        "flag": rng.integers(0, 2, size=batch).astype(bool),
        "ids": rng.integers(-(2**40), 2**40, size=(batch, 2)).astype(np.int64),
        "text": text,
        "small": rng.integers(0, 256, size=batch).astype(np.uint8),
    }


def plus_one_onnx() -> bytes:
    """y = x + 1, x of shape [-1, 3]: the model the documented examples fit."""
    return onnx_model(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        [("x", TensorProto.FLOAT, [-1, 3])],
        [("y", TensorProto.FLOAT, [-1, 3])],
        [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )


def digits_onnx(seed: int = 0) -> bytes:
    """An MLP 64 -> 32 -> 10 shaped like the demo digits model (logits out)."""
    rng = np.random.default_rng(seed)
    w1, b1 = rng.normal(size=(64, 32)).astype(np.float32) * 0.2, rng.normal(size=32).astype(np.float32)
    w2, b2 = rng.normal(size=(32, 10)).astype(np.float32) * 0.2, rng.normal(size=10).astype(np.float32)
    F = TensorProto.FLOAT
    return onnx_model(
        [
            helper.make_node("Gemm", ["pixels", "w1", "b1"], ["h"]),
            helper.make_node("Relu", ["h"], ["hr"]),
            helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
        ],
        [("pixels", F, [-1, 64])],
        [("logits", F, [-1, 10])],
        [
            helper.make_tensor("w1", F, w1.shape, w1.ravel()),
            helper.make_tensor("b1", F, b1.shape, b1),
            helper.make_tensor("w2", F, w2.shape, w2.ravel()),
            helper.make_tensor("b2", F, b2.shape, b2),
        ],
    )


def slow_onnx() -> bytes:
    """y = x + n, counted one by one in a Loop: runs as long as `n` says."""
    F, L, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", L, []),
            helper.make_tensor_value_info("cond_in", B, []),
            helper.make_tensor_value_info("acc_in", F, [1]),
        ],
        [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info("acc_out", F, [1])],
        [helper.make_tensor("one", F, [1], [1.0])],
    )
    return onnx_model(
        [
            helper.make_node("Squeeze", ["n"], ["trips"]),
            helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body),
        ],
        [("x", F, [1]), ("n", L, [1])],
        [("y", F, [1])],
        [helper.make_tensor("cond", B, [], [True])],
    )


def torchscript_model() -> bytes:
    import torch

    class Scorer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, idx: torch.Tensor):
            return torch.softmax(self.linear(x), dim=1), idx * 2

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(Scorer().eval()), buffer)
    return buffer.getvalue()


TORCHSCRIPT_SIGNATURE = {
    "inputs": [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "idx", "datatype": "INT64", "shape": [-1]},
    ],
    "outputs": [
        {"name": "probs", "datatype": "FP32", "shape": [-1, 2]},
        {"name": "idx2", "datatype": "INT64", "shape": [-1]},
    ],
}


def torch_export_model() -> bytes:
    import torch

    class Doubler(torch.nn.Module):
        def forward(self, x):
            return x * 2 + 1

    batch = torch.export.Dim("batch")
    program = torch.export.export(Doubler(), (torch.ones(2, 3),), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    return buffer.getvalue()


TORCH_EXPORT_SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
}


def publish(
    *,
    owner,
    name: str,
    data: bytes,
    format: str = "onnx",
    signature: dict | None = None,
    task: str = "other",
    labels=None,
    preprocessing=None,
    visibility: str = "public",
    number: int = 1,
) -> ModelVersion:
    """Catalog rows as the marketplace leaves them after validation: a ready version, file in storage."""
    model, _ = Model.objects.get_or_create(
        owner=owner,
        name=name,
        defaults={
            "task": task,
            "labels": labels or [],
            "preprocessing": preprocessing or {},
            "visibility": visibility,
        },
    )
    sha = hashlib.sha256(data).hexdigest()
    path = f"models/{sha[:2]}/{sha}"
    if not default_storage.exists(path):
        default_storage.save(path, ContentFile(data))
    version = ModelVersion(
        model=model,
        number=number,
        format=format,
        size=len(data),
        sha256=sha,
        status=ModelVersion.Status.READY,
        signature=signature if signature is not None else onnx_signature(data),
    )
    version.file.name = path
    version.save()
    return version


def memory_hungry_onnx() -> bytes:
    """y = sum(ones(n)): needs 4·n bytes, so its memory depends on an input value (none at upload)."""
    F, L = TensorProto.FLOAT, TensorProto.INT64
    return onnx_model(
        [
            helper.make_node(
                "ConstantOfShape", ["n"], ["ones"], value=helper.make_tensor("one", F, [1], [1.0])
            ),
            helper.make_node("ReduceSum", ["ones"], ["y"], keepdims=1),
        ],
        [("n", L, [1])],
        [("y", F, [1])],
    )
