"""The tensor codec: every OIP datatype in JSON and binary form, validation, top classes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inference.codec import (
    DATATYPES,
    BinaryBody,
    TensorError,
    decode_named_lists,
    decode_oip_tensors,
    encode_outputs_json,
    encode_outputs_oip,
    pack_tensors,
    tensor_to_bytes,
    top_classes,
    unpack_tensors,
)

SAMPLES = {
    "BOOL": [True, False],
    "UINT8": [0, 255],
    "UINT16": [0, 65535],
    "UINT32": [0, 2**32 - 1],
    "UINT64": [0, 2**64 - 1],
    "INT8": [-128, 127],
    "INT16": [-(2**15), 2**15 - 1],
    "INT32": [-(2**31), 2**31 - 1],
    "INT64": [-(2**63), 2**63 - 1],
    "FP16": [0.5, -65504.0],
    "FP32": [1.5, -3.25],
    "FP64": [1e300, -2.5],
    "BYTES": ["héllo", ""],
}


def signature(datatype: str, shape=(-1,)) -> dict:
    return {"inputs": [{"name": "t", "datatype": datatype, "shape": list(shape)}]}


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_every_datatype_round_trips_through_json_and_binary(datatype):
    values = SAMPLES[datatype]
    from_lists = decode_named_lists({"t": values}, signature(datatype))["t"]
    from_oip = decode_oip_tensors(
        [{"name": "t", "datatype": datatype, "shape": [2], "data": values}], signature(datatype)
    )["t"]
    binary = tensor_to_bytes(from_lists)
    from_binary = decode_oip_tensors(
        [{"name": "t", "datatype": datatype, "shape": [2], "parameters": {"binary_data_size": len(binary)}}],
        signature(datatype),
        BinaryBody(binary),
    )["t"]
    expected = [v.encode() for v in values] if datatype == "BYTES" else values
    for array in (from_lists, from_oip, from_binary):
        assert array.dtype == DATATYPES[datatype]
        assert array.tolist() == expected
    [encoded] = encode_outputs_json({"t": from_binary})
    assert encoded == {"name": "t", "datatype": datatype, "shape": [2], "data": values}
    header, tensors = unpack_tensors(pack_tensors({"id": "x"}, {"t": from_lists}))
    assert header == {"id": "x"} and tensors["t"].tolist() == expected


def test_bytes_are_length_prefixed_little_endian():
    array = np.array([b"ab", b""], dtype=object)
    assert tensor_to_bytes(array) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


@pytest.mark.parametrize(
    ("datatype", "values", "message"),
    [
        ("UINT8", [300], "300 is out of range [0, 255]"),
        ("UINT8", [-1], "-1 is out of range"),
        ("INT64", [1.5], "1.5 is not an integer"),
        ("INT8", [True], "not true/false"),
        ("UINT64", [2**64], "out of range"),
        ("FP16", [1e6], "out of range"),
        ("BOOL", [0], "true or false"),
        ("FP32", ["1"], "must hold numbers"),
        ("BYTES", [1], "must be a string"),
    ],
)
def test_values_that_do_not_fit_the_datatype_are_refused(datatype, values, message):
    with pytest.raises(TensorError, match=message.replace("[", r"\[").replace("]", r"\]")):
        decode_named_lists({"t": values}, signature(datatype))


def test_fixed_dimensions_and_ranks_are_checked():
    with pytest.raises(TensorError, match="dimension 1 must be 4"):
        decode_named_lists({"t": [[1.0, 2.0]]}, signature("FP32", (-1, 4)))
    with pytest.raises(TensorError, match="expects rank 2"):
        decode_named_lists({"t": [1.0]}, signature("FP32", (-1, 4)))


def test_binary_data_must_be_claimed_exactly():
    with pytest.raises(TensorError, match="no input claims"):
        decode_oip_tensors(
            [{"name": "t", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}],
            signature("FP32"),
            BinaryBody(b"\0" * 8),
        )
    with pytest.raises(TensorError, match="needs 8"):
        decode_oip_tensors(
            [{"name": "t", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}],
            signature("FP32"),
            BinaryBody(b"\0" * 4),
        )


def test_outputs_are_binary_where_asked():
    tensors = {"a": np.array([1.0], dtype=np.float32), "b": np.array([2], dtype=np.int64)}
    described, chunks = encode_outputs_oip(
        tensors, [{"name": "b", "parameters": {"binary_data": True}}], False
    )
    assert described == [
        {"name": "b", "datatype": "INT64", "shape": [1], "parameters": {"binary_data_size": 8}}
    ]
    assert chunks == [np.array([2], dtype="<i8").tobytes()]
    described, chunks = encode_outputs_oip(tensors, None, False)
    assert [d["data"] for d in described] == [[1.0], [2]] and chunks == []


def test_top_applies_softmax_to_logits_but_keeps_probabilities():
    labels = ["cat", "dog", "eel"]
    logits = {"logits": np.array([[2.0, 0.0, -1.0]], dtype=np.float32)}
    top = top_classes(logits, labels)
    expected = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    assert [t["label"] for t in top] == ["cat", "dog", "eel"]
    assert top[0]["score"] == pytest.approx(expected[0], rel=1e-6)
    probabilities = {"label": np.array([1]), "p": np.array([[0.2, 0.7, 0.1]], dtype=np.float32)}
    assert [(t["label"], round(t["score"], 5)) for t in top_classes(probabilities, labels)] == [
        ("dog", 0.7),
        ("cat", 0.2),
        ("eel", 0.1),
    ]


def test_a_header_orjson_cannot_write_round_trips_through_the_standard_library():
    header, tensors = unpack_tensors(
        pack_tensors({"big": 2**70, "x": float("nan")}, {"a": np.ones(3, np.float32)})
    )
    assert header["big"] == 2**70 and math.isnan(header["x"])
    assert tensors["a"].tolist() == [1.0, 1.0, 1.0]
