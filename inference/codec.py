"""Tensors in and out: JSON nested lists, Open Inference Protocol tensors, the binary tensor data extension.

Inside the app a tensor is a numpy array; BYTES tensors are object arrays of `bytes`. Everything a client
sends is checked against the version's signature here, before anything is queued, and a problem raises
`TensorError` with a message that names it.
"""

from __future__ import annotations

import base64
import io
import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import orjson

DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPE_OF_DTYPE = {dtype: name for name, dtype in DATATYPES.items() if name != "BYTES"}


class TensorError(ValueError):
    """The client sent something that does not fit the model: the message says what, for a 400."""


def datatype_of(array: np.ndarray) -> str:
    if array.dtype == object or array.dtype.kind in "SU":
        return "BYTES"
    try:
        return DATATYPE_OF_DTYPE[array.dtype]
    except KeyError:
        raise TensorError(f"unsupported tensor dtype {array.dtype}") from None


# --- decoding values ----------------------------------------------------------------------------------------


def _as_bytes_element(value, name: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TensorError(f"input '{name}' is BYTES: every element must be a string, got {type(value).__name__}")


def _array_from_values(values, datatype: str, name: str) -> np.ndarray:
    """Nested lists (or a flat list) of JSON values into an array of the datatype; every value must fit."""
    if datatype == "BYTES":
        try:
            raw = np.array(values, dtype=object)
        except ValueError:
            raise TensorError(f"input '{name}' is not a rectangular nested list") from None
        if raw.dtype != object:
            raw = raw.astype(object)
        flat = [_as_bytes_element(v, name) for v in raw.ravel().tolist()] if raw.ndim else None
        if flat is None:
            raise TensorError(f"input '{name}' must be a list")
        result = np.empty(len(flat), dtype=object)
        result[:] = flat
        return result.reshape(raw.shape)
    try:
        raw = np.asarray(values)
    except (ValueError, OverflowError):
        raise TensorError(f"input '{name}' is not a rectangular nested list of numbers") from None
    dtype = DATATYPES[datatype]
    kind = raw.dtype.kind
    if raw.size == 0:
        return np.zeros(raw.shape, dtype=dtype)
    if kind in "USO" and not (kind == "O" and datatype != "BOOL" and _all_python_ints(raw)):
        raise TensorError(
            f"input '{name}' ({datatype}) must hold {_expected(datatype)}, not strings or lists"
        )
    if datatype == "BOOL":
        if kind != "b":
            raise TensorError(f"input '{name}' is BOOL: values must be true or false")
        return raw
    if kind == "b":
        raise TensorError(f"input '{name}' ({datatype}) must hold {_expected(datatype)}, not true/false")
    if dtype.kind in "iu":
        if kind == "f":
            # Python ints beyond int64 come out of numpy as floats: look at the values themselves.
            raw = np.array(values, dtype=object)
            kind = "O"
            for value in raw.ravel().tolist():
                if isinstance(value, float) and not value.is_integer():
                    raise TensorError(f"input '{name}' is {datatype}: {value!r} is not an integer")
        info = np.iinfo(dtype)
        if kind == "O":
            flat = [int(v) for v in raw.ravel().tolist()]
            low, high = min(flat), max(flat)
        else:
            low, high = int(raw.min()), int(raw.max())
        if low < info.min or high > info.max:
            bad = low if low < info.min else high
            raise TensorError(f"input '{name}' is {datatype}: {bad} is out of range [{info.min}, {info.max}]")
        if kind == "O":
            return np.array(flat, dtype=dtype).reshape(raw.shape)
        return raw.astype(dtype)
    # floating point
    if kind == "O":
        raw = raw.astype(np.float64)
    if dtype != np.float64:
        finite = np.isfinite(raw)
        limit = np.finfo(dtype).max
        if np.any(np.abs(raw[finite]) > limit):
            bad = raw[finite][np.abs(raw[finite]) > limit].ravel()[0].item()
            raise TensorError(f"input '{name}' is {datatype}: {bad} is out of range (largest {float(limit)})")
    return raw.astype(dtype)


def _all_python_ints(raw: np.ndarray) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in raw.ravel().tolist())


def _expected(datatype: str) -> str:
    if datatype == "BOOL":
        return "true/false values"
    return "integers" if DATATYPES[datatype].kind in "iu" else "numbers"


# --- the signature ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def from_dict(cls, spec: dict) -> TensorSpec:
        return cls(
            name=spec["name"], datatype=spec["datatype"], shape=tuple(int(d) for d in spec.get("shape", []))
        )

    def check(self, array: np.ndarray) -> None:
        if array.ndim != len(self.shape):
            raise TensorError(
                f"input '{self.name}' has shape {list(array.shape)}: "
                f"the model expects rank {len(self.shape)} "
                f"(shape {list(self.shape)}, -1 is any size)"
            )
        for axis, (got, want) in enumerate(zip(array.shape, self.shape, strict=True)):
            if want >= 0 and got != want:
                raise TensorError(
                    f"input '{self.name}' has shape {list(array.shape)}: dimension {axis} must be {want} "
                    f"(the model expects {list(self.shape)})"
                )


def specs_of(signature: dict, key: str) -> list[TensorSpec]:
    return [TensorSpec.from_dict(spec) for spec in signature.get(key, [])]


def _check_names(given: list[str], specs: list[TensorSpec]) -> None:
    expected = [spec.name for spec in specs]
    unknown = [name for name in given if name not in expected]
    if unknown:
        raise TensorError(f"unknown input {unknown[0]!r}: the model's inputs are {expected}")
    missing = [name for name in expected if name not in given]
    if missing:
        raise TensorError(f"missing input {missing[0]!r}: the model's inputs are {expected}")


def decode_named_lists(inputs: dict, signature: dict) -> dict[str, np.ndarray]:
    """`{"x": [[...]], ...}`: each input's datatype comes from the signature."""
    specs = specs_of(signature, "inputs")
    _check_names(list(inputs), specs)
    tensors = {}
    for spec in specs:
        array = _array_from_values(inputs[spec.name], spec.datatype, spec.name)
        spec.check(array)
        tensors[spec.name] = array
    return tensors


def decode_oip_tensors(
    inputs: list, signature: dict, binary: BinaryBody | None = None
) -> dict[str, np.ndarray]:
    """`[{"name", "datatype", "shape", "data"}]` (data flat, row-major), or binary chunks after the JSON."""
    specs = {spec.name: spec for spec in specs_of(signature, "inputs")}
    names = []
    tensors = {}
    for position, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise TensorError(f"inputs[{position}] must be an object with name, datatype, shape and data")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise TensorError(f"inputs[{position}] has no 'name'")
        if name in names:
            raise TensorError(f"input {name!r} is given twice")
        names.append(name)
        if name not in specs:
            raise TensorError(f"unknown input {name!r}: the model's inputs are {list(specs)}")
        spec = specs[name]
        datatype = tensor.get("datatype")
        if datatype != spec.datatype:
            raise TensorError(f"input {name!r} has datatype {datatype}: the model expects {spec.datatype}")
        shape = tensor.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise TensorError(f"input {name!r}: 'shape' must be a list of non-negative integers")
        parameters = tensor.get("parameters") or {}
        if "binary_data_size" in parameters:
            if binary is None:
                raise TensorError(
                    f"input {name!r} has binary_data_size but the request has no "
                    "Inference-Header-Content-Length"
                )
            array = tensor_from_bytes(
                binary.take(parameters["binary_data_size"], name), datatype, shape, name
            )
        else:
            if "data" not in tensor:
                raise TensorError(f"input {name!r} has no 'data'")
            array = _array_from_values(tensor["data"], datatype, name)
            count = math.prod(shape)
            if array.size != count:
                raise TensorError(f"input {name!r} has {array.size} values: shape {shape} needs {count}")
            array = array.reshape(shape)
        spec.check(array)
        tensors[name] = array
    if binary is not None:
        binary.finish()
    _check_names(names, list(specs.values()))
    return tensors


# --- binary encoding (the extension, and the worker's wire format) ------------------------------------------


def tensor_to_bytes(array: np.ndarray) -> bytes:
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(item)) + item for item in array.ravel().tolist())
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def tensor_from_bytes(buffer: bytes | memoryview, datatype: str, shape: list[int], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BYTES":
        items = []
        view = memoryview(buffer)
        offset = 0
        while offset < len(view):
            if offset + 4 > len(view):
                raise TensorError(f"input {name!r}: truncated BYTES element length")
            (length,) = struct.unpack_from("<I", view, offset)
            offset += 4
            if offset + length > len(view):
                raise TensorError(f"input {name!r}: a BYTES element runs past the end of its data")
            items.append(bytes(view[offset : offset + length]))
            offset += length
        if len(items) != count:
            raise TensorError(f"input {name!r} has {len(items)} elements: shape {shape} needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = DATATYPES[datatype].newbyteorder("<")
    if len(buffer) != count * dtype.itemsize:
        raise TensorError(
            f"input {name!r} has {len(buffer)} bytes of data: shape {shape} of {datatype} needs "
            f"{count * dtype.itemsize}"
        )
    array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
    if datatype == "BOOL" and array.size and np.frombuffer(buffer, dtype=np.uint8).max() > 1:
        raise TensorError(f"input {name!r} is BOOL: bytes must be 0 or 1")
    return array.astype(DATATYPES[datatype], copy=False)


class BinaryBody:
    """The binary part of a request that follows the JSON header, consumed input by input."""

    def __init__(self, data: bytes):
        self.view = memoryview(data)
        self.offset = 0

    def take(self, size, name: str) -> memoryview:
        if not isinstance(size, int) or size < 0:
            raise TensorError(f"input {name!r}: binary_data_size must be a non-negative integer")
        if self.offset + size > len(self.view):
            raise TensorError(
                f"input {name!r}: binary_data_size {size} runs past the end of the request body"
            )
        chunk = self.view[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def finish(self) -> None:
        if self.offset != len(self.view):
            raise TensorError(
                f"the request body has {len(self.view) - self.offset} bytes that no input claims"
            )


def pack_tensors(header: dict, tensors: dict[str, np.ndarray]) -> bytes:
    """A JSON header (with each tensor's name, datatype, shape, size) followed by the tensors' bytes."""
    chunks = []
    described = []
    for name, array in tensors.items():
        data = tensor_to_bytes(array)
        chunks.append(data)
        described.append(
            {"name": name, "datatype": datatype_of(array), "shape": list(array.shape), "size": len(data)}
        )
    head = _header_bytes({**header, "tensors": described})
    return struct.pack("<I", len(head)) + head + b"".join(chunks)


def _header_bytes(header: dict) -> bytes:
    # orjson: every call crosses the web, the queue, the supervisor and a runner with one of these (a profile
    # of the supervisor had the standard library's JSON at 14 % of its time).
    try:
        return orjson.dumps(header)
    except TypeError:  # what orjson does not write (an integer past 64 bits) the standard library does
        return json.dumps(header).encode()


def unpack_tensors(message: bytes) -> tuple[dict, dict[str, np.ndarray]]:
    (length,) = struct.unpack_from("<I", message, 0)
    view = memoryview(message)
    try:
        header = orjson.loads(view[4 : 4 + length])
    except orjson.JSONDecodeError:  # written by the standard library (`_header_bytes`), e.g. with a NaN
        header = json.loads(bytes(view[4 : 4 + length]))
    view = view[4 + length :]
    offset = 0
    tensors = {}
    for described in header.pop("tensors"):
        chunk = view[offset : offset + described["size"]]
        offset += described["size"]
        tensors[described["name"]] = tensor_from_bytes(chunk, described["datatype"], described["shape"], "")
    return header, tensors


# --- encoding outputs ---------------------------------------------------------------------------------------


def json_data(array: np.ndarray) -> list:
    if array.dtype == object:
        return [item.decode("utf-8", errors="replace") for item in array.ravel().tolist()]
    return array.ravel().tolist()


def encode_outputs_json(tensors: dict[str, np.ndarray]) -> list[dict]:
    return [
        {"name": name, "datatype": datatype_of(array), "shape": list(array.shape), "data": json_data(array)}
        for name, array in tensors.items()
    ]


def encode_outputs_oip(
    tensors: dict[str, np.ndarray], requested: list[dict] | None, binary_default: bool
) -> tuple[list[dict], list[bytes]]:
    """Outputs for /v2/: JSON data, or binary chunks where asked (tritonclient's default)."""
    if requested:
        wanted = []
        for position, output in enumerate(requested):
            if not isinstance(output, dict) or not isinstance(output.get("name"), str):
                raise TensorError(f"outputs[{position}] must be an object with a 'name'")
            if output["name"] not in tensors:
                raise TensorError(
                    f"unknown output {output['name']!r}: the model's outputs are {list(tensors)}"
                )
            binary = (output.get("parameters") or {}).get("binary_data", binary_default)
            wanted.append((output["name"], bool(binary)))
    else:
        wanted = [(name, binary_default) for name in tensors]
    described, chunks = [], []
    for name, binary in wanted:
        array = tensors[name]
        entry = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if binary:
            data = tensor_to_bytes(array)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = json_data(array)
        described.append(entry)
    return described, chunks


def top_classes(tensors: dict[str, np.ndarray], labels: list[str], count: int = 5) -> list[dict] | None:
    """The best classes of a single-item result, from the first float output with one score per label.

    Scores are shown as probabilities: an output that already is one (values in [0, 1] summing to 1, e.g. a
    softmax layer or sklearn's probabilities) is used as is, anything else (logits) goes through a softmax.
    """
    if not labels:
        return None
    for array in tensors.values():
        if array.dtype.kind != "f" or array.ndim == 0 or array.shape[-1] != len(labels):
            continue
        if array.size != len(labels):
            return None  # a batch: `top` describes a single item
        scores = array.astype(np.float64).ravel()
        if not (np.all(scores >= 0) and np.all(scores <= 1) and abs(scores.sum() - 1) < 1e-3):
            shifted = np.exp(scores - scores.max())
            scores = shifted / shifted.sum()
        order = np.argsort(-scores, kind="stable")[:count]
        return [{"label": str(labels[i]), "score": float(scores[i])} for i in order]
    return None


# --- images -------------------------------------------------------------------------------------------------


def decode_image(encoded: str, preprocessing: dict, signature: dict) -> dict[str, np.ndarray]:
    """A base64 PNG or JPEG into the model's image input, as the model's `preprocessing` says (input, mode,
    width and height, invert, scale, mean and std, layout)."""
    from PIL import Image, UnidentifiedImageError

    specs = specs_of(signature, "inputs")
    target = preprocessing.get("input") or (specs[0].name if specs else None)
    spec = next((s for s in specs if s.name == target), None)
    if spec is None:
        raise TensorError(f"the model's preprocessing names input {target!r}, which the model does not have")
    if len(specs) != 1:
        raise TensorError("an image can only be sent to a model with a single input; send 'inputs' instead")
    if not isinstance(encoded, str):
        raise TensorError("'image' must be a base64-encoded PNG or JPEG string")
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    try:
        raw = base64.b64decode(encoded, validate=True)
    except ValueError:
        raise TensorError("'image' is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw), formats=["PNG", "JPEG"]) as image:
            mode = preprocessing.get("mode", "RGB")
            width = int(preprocessing.get("width") or image.width)
            height = int(preprocessing.get("height") or image.height)
            pixels = np.asarray(image.convert(mode).resize((width, height), Image.Resampling.BILINEAR))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise TensorError("'image' is not a readable PNG or JPEG image") from None
    values = pixels.astype(np.float32)
    if values.ndim == 2:
        values = values[:, :, None]
    if preprocessing.get("invert"):
        values = 255.0 - values
    channels = values.shape[2]
    mean = np.asarray(preprocessing.get("mean") or [0.0], dtype=np.float32)
    std = np.asarray(preprocessing.get("std") or [1.0], dtype=np.float32)
    values = (values * float(preprocessing.get("scale", 1.0)) - np.resize(mean, channels)) / np.resize(
        std, channels
    )
    layout = preprocessing.get("layout", "NCHW")
    if layout == "NCHW":
        values = values.transpose(2, 0, 1)[None]
    elif layout == "NHWC":
        values = values[None]
    else:
        values = values.reshape(1, -1)
    dtype = DATATYPES.get(spec.datatype)
    if dtype is None or dtype.kind != "f":
        raise TensorError(f"input {spec.name!r} is {spec.datatype}: images need a floating-point input")
    array = values.astype(dtype)
    spec.check(array)
    return {spec.name: array}
