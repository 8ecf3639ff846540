"""The ONNX models the benchmark builds itself (nothing is downloaded): an MLP, an image CNN, a slow model."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper

MLP_INPUT = "pixels"
CNN_INPUT = "image"
CNN_SHAPE = (3, 96, 96)


def mlp(layers: tuple[int, ...] = (64, 128, 10)) -> bytes:
    """Gemm-Relu-…-Gemm, FP32, input `pixels` [-1, 64], output `logits` [-1, 10]."""
    rng = np.random.default_rng(0)
    nodes, initializers, current = [], [], MLP_INPUT
    pairs = list(zip(layers[:-1], layers[1:], strict=True))
    for index, (fan_in, fan_out) in enumerate(pairs):
        weight = (rng.normal(size=(fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        initializers += [
            helper.make_tensor(f"w{index}", TensorProto.FLOAT, weight.shape, weight.ravel()),
            helper.make_tensor(f"b{index}", TensorProto.FLOAT, [fan_out], np.zeros(fan_out, np.float32)),
        ]
        out = "logits" if index == len(pairs) - 1 else f"h{index}"
        nodes.append(helper.make_node("Gemm", [current, f"w{index}", f"b{index}"], [out]))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"{out}r"]))
            out = f"{out}r"
        current = out
    return _float_model(nodes, initializers, (MLP_INPUT, [-1, layers[0]]), ("logits", [-1, layers[-1]]))


def resnet_cnn(blocks: int = 2, width: int = 32) -> bytes:
    """A ResNet-shaped CNN on a 3×96×96 image: a stride-2 conv stem, `blocks` residual blocks
    (conv-relu-conv + skip, relu), global average pool, fc 10. About 1 ms of one-thread compute per image."""
    rng = np.random.default_rng(1)
    nodes, initializers = [], []

    def conv(name: str, source: str, c_in: int, c_out: int, stride: int = 1) -> str:
        weight = (rng.normal(size=(c_out, c_in, 3, 3)) * np.sqrt(2 / (9 * c_in))).astype(np.float32)
        initializers.append(helper.make_tensor(f"{name}_w", TensorProto.FLOAT, weight.shape, weight.ravel()))
        initializers.append(
            helper.make_tensor(f"{name}_b", TensorProto.FLOAT, [c_out], np.zeros(c_out, np.float32))
        )
        nodes.append(
            helper.make_node(
                "Conv",
                [source, f"{name}_w", f"{name}_b"],
                [name],
                pads=[1, 1, 1, 1],
                strides=[stride, stride],
            )
        )
        return name

    def relu(source: str) -> str:
        nodes.append(helper.make_node("Relu", [source], [f"{source}_r"]))
        return f"{source}_r"

    current = relu(conv("stem", CNN_INPUT, CNN_SHAPE[0], width, stride=2))
    for block in range(blocks):
        inner = relu(conv(f"b{block}c1", current, width, width))
        second = conv(f"b{block}c2", inner, width, width)
        nodes.append(helper.make_node("Add", [second, current], [f"b{block}sum"]))
        current = relu(f"b{block}sum")
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    weight = (rng.normal(size=(width, 10)) / np.sqrt(width)).astype(np.float32)
    initializers += [
        helper.make_tensor("fc_w", TensorProto.FLOAT, weight.shape, weight.ravel()),
        helper.make_tensor("fc_b", TensorProto.FLOAT, [10], np.zeros(10, np.float32)),
    ]
    nodes.append(helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"]))
    return _float_model(nodes, initializers, (CNN_INPUT, [-1, *CNN_SHAPE]), ("logits", [-1, 10]))


def slow_model() -> bytes:
    """y = x + n, counted one by one in a Loop of `n` trips: as slow as its input `n` [1] (INT64) asks, and
    instant on the zero inputs of the upload check, as a hostile tenant's model would be."""
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
    graph = helper.make_graph(
        [
            helper.make_node("Squeeze", ["n"], ["trips"]),
            helper.make_node("Loop", ["trips", "cond", "x"], ["y"], body=body),
        ],
        "slow",
        [helper.make_tensor_value_info("x", F, [1]), helper.make_tensor_value_info("n", L, [1])],
        [helper.make_tensor_value_info("y", F, [1])],
        [helper.make_tensor("cond", B, [], [True])],
    )
    return _serialize(graph)


def _float_model(nodes, initializers, input_spec, output_spec) -> bytes:
    graph = helper.make_graph(
        nodes,
        "benchmark",
        [helper.make_tensor_value_info(input_spec[0], TensorProto.FLOAT, input_spec[1])],
        [helper.make_tensor_value_info(output_spec[0], TensorProto.FLOAT, output_spec[1])],
        initializers,
    )
    return _serialize(graph)


def _serialize(graph) -> bytes:
    import onnx

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
