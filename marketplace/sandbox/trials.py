"""Inputs for the upload check's trial run, used inside the sandbox child (no Django here).

A trial run proves that a model runs; it cannot know what inputs make sense for it. Zeros divide integers by
zero, and shapes or scales read from an input make no sense as zeros or ones. So the check tries several
synthetic feeds in turn, and a model that none of them runs is published with a note rather than refused:
only the uploader's own `example` can prove such a model wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

OIP_TO_NUMPY = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
FILLS = ("zeros", "ones", "small positive values", "random values")
# Error texts of runtimes that ran out of the sandbox's memory: that is a verdict, not a bad synthetic input.
RESOURCE_FAILURES = ("bad_alloc", "failed to allocate", "out of memory", "cannot allocate", "memoryerror")


class ExampleError(ValueError):
    """The uploader's example does not fit the model's inputs; the message says how."""


def filled(spec: dict, *, fill: str, dynamic: int, seed: int = 0):
    import numpy as np

    shape = [dynamic if d == -1 else d for d in spec["shape"]]
    dtype = OIP_TO_NUMPY[spec["datatype"]]
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if dtype == "object":
        text = "" if fill == "zeros" else "a"
        return np.full(shape, text.encode(), dtype=object)
    if fill == "zeros":
        return np.zeros(shape, dtype=dtype)
    if fill == "ones":
        return np.ones(shape, dtype=dtype)
    kind = np.dtype(dtype).kind
    if fill == "small positive values":
        steps = np.arange(count, dtype=np.int64) % 7 + 1
        values = steps if kind in "iu" else steps / 4.0
        if kind == "b":
            values = steps % 2 == 1
        return values.astype(dtype).reshape(shape)
    rng = np.random.default_rng(seed)
    if kind == "b":
        return (rng.random(shape) < 0.5).astype(dtype)
    if kind in "iu":
        info = np.iinfo(dtype)
        low, high = max(int(info.min), -5), min(int(info.max), 5)
        return rng.integers(low, high + 1, size=shape).astype(dtype)
    return rng.uniform(-1.0, 1.0, size=shape).astype(dtype)


def synthetic_feeds(inputs: list[dict]) -> Iterator[tuple[str, dict]]:
    """(description, {name: array}) to try in turn: each fill with dynamic dimensions of 1, then of 2."""
    for dynamic in (1, 2):
        for fill in FILLS:
            arrays = {spec["name"]: filled(spec, fill=fill, dynamic=dynamic) for spec in inputs}
            yield f"{fill} (dynamic dimensions {dynamic})", arrays


def example_arrays(example, inputs: list[dict]) -> dict:
    """The uploader's example, a predict body's `inputs` (name -> nested list, or OIP tensors), as arrays."""
    import numpy as np

    specs = {spec["name"]: spec for spec in inputs}
    if isinstance(example, dict):
        given = {name: (value, None) for name, value in example.items()}
    elif isinstance(example, list):
        given = {}
        for position, tensor in enumerate(example):
            if not (isinstance(tensor, dict) and isinstance(tensor.get("name"), str) and "data" in tensor):
                raise ExampleError(f"inputs[{position}] must be an object with name, shape and data")
            given[tensor["name"]] = (tensor["data"], tensor.get("shape"))
    else:
        raise ExampleError("it must be an object (input name -> nested list) or a list of tensors")
    if set(given) != set(specs):
        raise ExampleError(f"it names inputs {sorted(given)}, but the model's inputs are {list(specs)}")
    arrays = {}
    for name, spec in specs.items():
        values, shape = given[name]
        dtype = OIP_TO_NUMPY[spec["datatype"]]
        try:
            if dtype == "object":
                raw = np.array(values, dtype=object)
                array = np.array([str(v).encode() for v in raw.ravel()], dtype=object).reshape(raw.shape)
            else:
                array = np.array(values, dtype=dtype)
            if shape is not None:
                array = array.reshape(shape)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ExampleError(f"input {name!r} does not fit {spec['datatype']}: {exc}") from None
        want = spec["shape"]
        if array.ndim != len(want) or any(w >= 0 and g != w for g, w in zip(array.shape, want, strict=False)):
            raise ExampleError(f"input {name!r} has shape {list(array.shape)}; the model expects {want}")
        arrays[name] = array
    return arrays


def is_resource_failure(message: str) -> bool:
    lowered = message.lower()
    return any(phrase in lowered for phrase in RESOURCE_FAILURES)


def first_line(message: str, limit: int = 400) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def trial_run(run: Callable[[dict], object], inputs: list[dict], example=None) -> tuple[object, str]:
    """Run the model on the example, or on synthetic feeds until one works: (result, note).

    Raises ExampleError for an example that does not fit, RuntimeError (the runtime's message) for an
    example that fails or a model that runs out of memory; otherwise never fails. The result is None and
    the note says why when no synthetic feed ran.
    """
    if example is not None:
        arrays = example_arrays(example, inputs)
        try:
            return run(arrays), ""
        except Exception as exc:
            raise RuntimeError(f"The model failed on the given example: {first_line(exc, 2000)}") from exc
    errors = []
    for description, arrays in synthetic_feeds(inputs):
        try:
            return run(arrays), ""
        except MemoryError:
            raise
        except Exception as exc:
            if is_resource_failure(str(exc)):
                raise RuntimeError(f"The model needs more memory than validation allows: {exc}") from exc
            errors.append(f"{description}: {first_line(exc)}")
    return None, f"trial run skipped: {errors[0]} — give an `example` to check it"
