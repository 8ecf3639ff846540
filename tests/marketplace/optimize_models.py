"""Models built for the optimization tests (nothing downloaded): an MLP trained here, one whose classes differ
by less than int8 can hold, and hostile graphs that pass the upload check but not an optimization."""

from __future__ import annotations

import warnings
from functools import cache

import numpy as np
from onnx import TensorProto, helper

from tests.inference.builders import onnx_model

F, L = TensorProto.FLOAT, TensorProto.INT64


@cache
def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    return train_test_split(
        digits.data.astype(np.float32), digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )


@cache
def trained_mlp() -> tuple[bytes, float]:
    """A 64 -> 128 -> 64 -> 10 MLP trained on sklearn's digits (pixels 0..16 in, logits out), as ONNX, with
    its held-out accuracy."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    x_train, x_test, y_train, y_test = digits_split()
    classifier = MLPClassifier(hidden_layer_sizes=(128, 64), max_iter=60, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 60 epochs are plenty for 97 % here
        classifier.fit(x_train / 16.0, y_train)
    (w1, w2, w3), (b1, b2, b3) = classifier.coefs_, classifier.intercepts_
    scale = np.array([1 / 16.0], dtype=np.float32)
    data = onnx_model(
        [
            helper.make_node("Mul", ["pixels", "scale"], ["x"]),
            helper.make_node("MatMul", ["x", "w1"], ["h1m"]),
            helper.make_node("Add", ["h1m", "b1"], ["h1a"]),
            helper.make_node("Relu", ["h1a"], ["h1"]),
            helper.make_node("MatMul", ["h1", "w2"], ["h2m"]),
            helper.make_node("Add", ["h2m", "b2"], ["h2a"]),
            helper.make_node("Relu", ["h2a"], ["h2"]),
            helper.make_node("MatMul", ["h2", "w3"], ["logitsm"]),
            helper.make_node("Add", ["logitsm", "b3"], ["logits"]),
        ],
        [("pixels", F, [-1, 64])],
        [("logits", F, [-1, 10])],
        [
            helper.make_tensor("scale", F, [1], scale),
            *(
                helper.make_tensor(name, F, array.shape, array.astype(np.float32).ravel())
                for name, array in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2), ("w3", w3), ("b3", b3))
            ),
        ],
    )
    return data, float(classifier.score(x_test / 16.0, y_test))


def digits_example(rows: int = 4) -> dict:
    _, x_test, _, _ = digits_split()
    return {"pixels": x_test[:rows].tolist()}


@cache
def near_tie_classifier() -> bytes:
    """scores = x @ W, W's ten columns the same up to 1e-4: int8 weights (steps of about 1/127 of the largest
    weight) cannot keep the columns apart, so the quantized top label is mostly not the original's."""
    rng = np.random.default_rng(1)
    column = rng.uniform(0.5, 1.0, size=(16, 1)).astype(np.float32)
    weights = column + rng.normal(0, 1e-4, size=(16, 10)).astype(np.float32)
    return onnx_model(
        [helper.make_node("MatMul", ["features", "w"], ["scores"])],
        [("features", F, [-1, 16])],
        [("scores", F, [-1, 10])],
        [helper.make_tensor("w", F, weights.shape, weights.ravel())],
    )


@cache
def memory_bomb_on_nonzero_inputs() -> bytes:
    """A MatMul model that also allocates max|x| × 10^9 floats and adds their sum × 0: on an all-zero example
    (as at upload) it allocates nothing; on any other input it asks for gigabytes."""
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    return onnx_model(
        [
            helper.make_node("MatMul", ["features", "w"], ["product"]),
            helper.make_node("Abs", ["features"], ["magnitude"]),
            helper.make_node("ReduceMax", ["magnitude"], ["peak"], keepdims=0),
            helper.make_node("Mul", ["peak", "billion"], ["wanted"]),
            helper.make_node("Cast", ["wanted"], ["length"], to=L),
            helper.make_node("Reshape", ["length", "one_dim"], ["shape"]),
            helper.make_node(
                "ConstantOfShape", ["shape"], ["big"], value=helper.make_tensor("v", F, [1], [1.0])
            ),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("Mul", ["total", "zero"], ["nothing"]),
            helper.make_node("Add", ["product", "nothing"], ["scores"]),
        ],
        [("features", F, [-1, 4])],
        [("scores", F, [-1, 3])],
        [
            helper.make_tensor("w", F, weights.shape, weights.ravel()),
            helper.make_tensor("billion", F, [], [1e9]),
            helper.make_tensor("one_dim", L, [1], [1]),
            helper.make_tensor("zero", F, [], [0.0]),
        ],
    )


@cache
def endless_loop_on_nonzero_inputs() -> bytes:
    """A MatMul model that also counts to max|x| × 10^12 in a Loop and adds the count × 0: on an all-zero
    example (as at upload) the loop never runs; on any other input it would run for days."""
    B = TensorProto.BOOL
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["count_in", "one"], ["count_out"]),
        ],
        "count",
        [
            helper.make_tensor_value_info("i", L, []),
            helper.make_tensor_value_info("cond_in", B, []),
            helper.make_tensor_value_info("count_in", F, []),
        ],
        [helper.make_tensor_value_info("cond_out", B, []), helper.make_tensor_value_info("count_out", F, [])],
        [helper.make_tensor("one", F, [], [1.0])],
    )
    return onnx_model(
        [
            helper.make_node("MatMul", ["features", "w"], ["product"]),
            helper.make_node("Abs", ["features"], ["magnitude"]),
            helper.make_node("ReduceMax", ["magnitude"], ["peak"], keepdims=0),
            helper.make_node("Mul", ["peak", "trillion"], ["wanted"]),
            helper.make_node("Cast", ["wanted"], ["trips"], to=L),
            helper.make_node("Loop", ["trips", "go", "start"], ["count"], body=body),
            helper.make_node("Mul", ["count", "zero"], ["nothing"]),
            helper.make_node("Add", ["product", "nothing"], ["scores"]),
        ],
        [("features", F, [-1, 4])],
        [("scores", F, [-1, 3])],
        [
            helper.make_tensor("w", F, weights.shape, weights.ravel()),
            helper.make_tensor("trillion", F, [], [1e12]),
            helper.make_tensor("go", B, [], [True]),
            helper.make_tensor("start", F, [], [0.0]),
            helper.make_tensor("zero", F, [], [0.0]),
        ],
    )


def onnx_ops(data: bytes) -> set[str]:
    import onnx

    return {node.op_type for node in onnx.load_from_string(data).graph.node}
