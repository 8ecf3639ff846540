"""Inspect an uploaded model file inside a throw-away child process.

Run as a script (`python -I inspect_file.py request.json`) by `marketplace.sandbox.validation`, never
imported by the web or worker process for real work: it starts under `confine.py`'s memory, CPU-time and
file-size limits, in an environment without secrets. Nothing here imports Django.

Order of checks, cheapest and safest first: magic bytes; for zip archives the central directory
(zip bomb) and a static scan of every pickle inside (`archives.py`: no pickle is ever unpickled); for
ONNX the protobuf structure (external data, tensor sizes, operator domains) and `onnx.checker`.
Only then does a runtime load the model, and a trial inference (`trials`) tries to run it. The answer is one
JSON line on the verdict descriptor (`verdict.py`); stdout goes to stderr.
"""

from __future__ import annotations

import os
import sys
import zipfile

if not __package__:
    # Run as a script under `python -I`, which puts no folder on sys.path. The project's root goes last (never
    # this folder: its `selectors.py` would shadow the standard library's).
    sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from marketplace.sandbox.archives import Rejected, check_zip, classify_archive, refusal, scan_archive, sniff  # noqa: E402
from marketplace.sandbox.verdict import verdict_main  # noqa: E402


def runtime_domains() -> set[str]:
    """Operator domains ONNX Runtime knows: its own operator schemas, and ONNX's registry, which it embeds."""
    import onnx.defs
    from onnxruntime.capi import _pybind_state

    known = {schema.domain for schema in _pybind_state.get_all_operator_schema()}
    known |= {schema.domain for schema in onnx.defs.get_all_schemas_with_history()}
    return known | {"ai.onnx"}  # the ONNX domain's explicit name: "" and "ai.onnx" are the same


ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


# --- Signatures ---------------------------------------------------------------------------------------------


def torch_to_oip(dtype) -> str:
    import torch

    table = {
        torch.float32: "FP32",
        torch.float64: "FP64",
        torch.float16: "FP16",
        torch.int64: "INT64",
        torch.int32: "INT32",
        torch.int16: "INT16",
        torch.int8: "INT8",
        torch.uint8: "UINT8",
        torch.bool: "BOOL",
    }
    if dtype not in table:
        raise Rejected(f"The tensor type {dtype} is not supported.")
    return table[dtype]


def flatten_outputs(result) -> list:
    import torch

    if isinstance(result, torch.Tensor):
        return [result]
    if isinstance(result, (tuple, list)) and all(isinstance(r, torch.Tensor) for r in result):
        return list(result)
    raise Rejected("The model must return a tensor or a tuple of tensors.")


def output_specs(tensors: list, *, batch_dynamic: bool) -> list[dict]:
    names = ["output"] if len(tensors) == 1 else [f"output_{i}" for i in range(len(tensors))]
    specs = []
    for name, tensor in zip(names, tensors, strict=True):
        shape = list(tensor.shape)
        if batch_dynamic and shape:
            shape[0] = -1
        specs.append({"name": name, "datatype": torch_to_oip(tensor.dtype), "shape": shape})
    return specs


# --- ONNX ---------------------------------------------------------------------------------------------------


def iter_bodies(model):
    """Every list of nodes the model holds: its graph, its local functions, and every subgraph (an If's or
    a Loop's body, or one in a function's default attributes) inside either, however deep."""
    pending = [model.graph, *model.functions]
    while pending:
        body = pending.pop()
        yield body
        for attribute in body_attributes(body):
            if attribute.HasField("g"):
                pending.append(attribute.g)
            pending.extend(attribute.graphs)


def body_attributes(body):
    for node in body.node:
        yield from node.attribute
    yield from getattr(body, "attribute_proto", ())  # a function's default attribute values


def iter_tensors(model):
    for body in iter_bodies(model):
        yield from getattr(body, "initializer", ())
        sparse = list(getattr(body, "sparse_initializer", ()))
        for attribute in body_attributes(body):
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                sparse.append(attribute.sparse_tensor)
            sparse.extend(attribute.sparse_tensors)
        for tensor in sparse:
            yield tensor.values
            yield tensor.indices


def iter_nodes(model):
    for body in iter_bodies(model):
        yield from body.node


def check_onnx_structure(model) -> None:
    import numpy as np
    from onnx import TensorProto, helper

    for tensor in iter_tensors(model):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise Rejected(
                f"The tensor {tensor.name!r} refers to external data ({location!r}); upload a single "
                "self-contained .onnx file (onnx.save(model, path, save_as_external_data=False))."
            )
        elements = int(np.prod([int(d) for d in tensor.dims], dtype=object)) if tensor.dims else 1
        if any(int(d) < 0 for d in tensor.dims):
            raise Rejected(f"The tensor {tensor.name!r} has a negative dimension.")
        if tensor.data_type == TensorProto.STRING:
            stored = len(tensor.string_data)
        elif tensor.HasField("raw_data"):
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
            stored = len(tensor.raw_data) // max(itemsize, 1)
        else:
            stored = max(
                len(tensor.float_data),
                len(tensor.int32_data),
                len(tensor.int64_data),
                len(tensor.double_data),
                len(tensor.uint64_data),
            )
        if stored != elements:
            raise Rejected(f"The tensor {tensor.name!r} claims {elements} elements but holds {stored}.")
    local_functions = {(f.domain, f.name) for f in model.functions}
    local_domains = {domain for domain, _name in local_functions}
    domains = runtime_domains()
    opsets = [*model.opset_import, *(opset for f in model.functions for opset in f.opset_import)]
    for opset in opsets:
        if opset.domain not in domains and opset.domain not in local_domains:
            raise Rejected(f"The operator domain {opset.domain!r} is not supported by the runtime.")
    for node in iter_nodes(model):
        if node.domain not in domains and (node.domain, node.op_type) not in local_functions:
            raise Rejected(f"The operator {node.domain}.{node.op_type} is not supported by the runtime.")


def inspect_onnx(path: str, request: dict) -> dict:
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:
        raise Rejected(f"The file is not a valid ONNX model (it does not parse: {exc}).") from exc
    if not model.graph.node and not model.graph.output:
        raise Rejected("The file is not a valid ONNX model (no graph).")
    check_onnx_structure(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as exc:
        raise Rejected(f"The ONNX model fails onnx.checker: {exc}") from exc
    del model

    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise Rejected(f"ONNX Runtime cannot load the model: {exc}") from exc
    signature = {"inputs": [], "outputs": []}
    for kind, args in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        for arg in args:
            if arg.type not in ORT_TO_OIP:
                hint = " (skl2onnx: convert with options={'zipmap': False})" if "map" in arg.type else ""
                raise Rejected(
                    f"The {kind[:-1]} {arg.name!r} has type {arg.type}; only tensors are supported{hint}."
                )
            shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
            signature[kind].append({"name": arg.name, "datatype": ORT_TO_OIP[arg.type], "shape": shape})
    _, note = checked_trial_run(lambda feed: session.run(None, feed), signature["inputs"], request)
    return {"format": "onnx", "signature": signature, "note": note}


# --- PyTorch ------------------------------------------------------------------------------------------------


def trials_module():
    from marketplace.sandbox import trials  # only when a model is run: it loads numpy

    return trials


def checked_trial_run(run, inputs: list[dict], request: dict):
    """The trial run (see `trials.trial_run`), its failures as rejections: (result or None, note)."""
    trials = trials_module()
    if request.get("tokenizer"):
        return text_trial_run(run, inputs, request), ""
    try:
        return trials.trial_run(run, inputs, request.get("example"))
    except trials.ExampleError as exc:
        raise Rejected(f"The `example` does not fit the model: {exc}.") from exc
    except RuntimeError as exc:
        raise Rejected(str(exc)) from exc


def text_trial_run(run, inputs: list[dict], request: dict):
    """A text model's trial run: the example's texts (or a sample sentence) through its tokenizer."""
    from marketplace import tokenization

    example = request.get("example")
    if isinstance(example, dict) or (isinstance(example, list) and example and isinstance(example[0], dict)):
        return checked_example_run(run, inputs, example)
    with open(request["tokenizer"], encoding="utf-8") as handle:
        tokenizer = tokenization.tokenizer_load(handle.read())
    try:
        plan = tokenization.text_plan(tokenizer, inputs)
        texts = tokenization.texts_of(example) if example is not None else [tokenization.SAMPLE_TEXT]
        if plan.fixed_batch is not None:
            texts = (texts * plan.fixed_batch)[: plan.fixed_batch]
        arrays, _ = tokenization.encode_texts(tokenization.tokenizer_configure(tokenizer, plan), plan, texts)
    except tokenization.TextError as exc:
        raise Rejected(f"The model cannot take text from its tokenizer: {exc}.") from exc
    try:
        return run(arrays)
    except Exception as exc:
        raise Rejected(
            "The model failed on the tokenized "
            + ("example" if example is not None else "sample sentence")
            + f": {trials_module().first_line(exc, 2000)}"
        ) from exc


def checked_example_run(run, inputs: list[dict], example):
    trials = trials_module()
    try:
        return trials.trial_run(run, inputs, example)[0]
    except trials.ExampleError as exc:
        raise Rejected(f"The `example` does not fit the model: {exc}.") from exc
    except RuntimeError as exc:
        raise Rejected(str(exc)) from exc


def torch_runner(module, names: list[str]):
    import torch

    def run(feed: dict):
        return flatten_outputs(module(*[torch.from_numpy(feed[name]) for name in names]))

    return run


def torch_inputs(specs: list[dict], *, fill: str = "zeros", dynamic: int = 1):
    import torch

    trials = trials_module()
    return [torch.from_numpy(trials.filled(spec, fill=fill, dynamic=dynamic)) for spec in specs]


def inspect_torchscript(path: str, request: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    try:
        module = torch.jit.load(path, map_location="cpu", _restore_shapes=True)
    except Exception as exc:
        raise Rejected(f"TorchScript cannot load the archive: {exc}") from exc
    module.eval()
    try:
        arguments = module.forward.schema.arguments[1:]
    except Exception as exc:
        raise Rejected("The TorchScript module has no forward method.") from exc
    names = [argument.name for argument in arguments]
    if not names or any(not isinstance(a.type, torch.TensorType) for a in arguments):
        raise Rejected("forward() must take one or more tensors.")
    inputs = recorded_input_specs(module, names) or hinted_input_specs(request.get("signature"), names)
    if inputs is None:
        raise Rejected(
            "The input shapes and types are unknown: save a traced module (torch.jit.trace records them), "
            "or send a "
            '`signature` field, e.g. {"inputs": [{"name": "' + names[0] + '", "datatype": "FP32", '
            '"shape": [-1, 64]}]}.'
        )
    with torch.no_grad():
        # TorchScript keeps no output types: they come from a run, so a model that none runs is refused.
        outputs, note = checked_trial_run(torch_runner(module, names), inputs, request)
        if outputs is None:
            raise Rejected(
                "The model failed a trial inference; its outputs are only known from a run. "
                + note.replace("trial run skipped: ", "").replace("check it", "run it")
            )
        batch_dynamic = all(spec["shape"] and spec["shape"][0] in (-1, 1) for spec in inputs)
        if batch_dynamic:
            try:
                batch_inputs = torch_inputs([{**s, "shape": [2, *s["shape"][1:]]} for s in inputs])
                batched = flatten_outputs(module(*batch_inputs))
                batch_dynamic = all(t.shape and t.shape[0] == 2 for t in batched)
            except Exception:
                batch_dynamic = False
    if batch_dynamic:
        inputs = [{**s, "shape": [-1, *s["shape"][1:]]} for s in inputs]
    elif any(-1 in s["shape"] for s in inputs):
        raise Rejected(
            "The model does not run with a batch of 2, so its signature cannot have dynamic dimensions."
        )
    return {
        "format": "torchscript",
        "signature": {"inputs": inputs, "outputs": output_specs(outputs, batch_dynamic=batch_dynamic)},
    }


def recorded_input_specs(module, names: list[str]) -> list[dict] | None:
    import torch

    graph_inputs = list(module.graph.inputs())[1:]
    specs = []
    for name, value in zip(names, graph_inputs, strict=False):
        kind = value.type()
        if not isinstance(kind, torch.TensorType):
            return None
        sizes, scalar = kind.sizes(), kind.scalarType()
        if sizes is None or scalar is None:
            return None
        dtype = getattr(
            torch,
            {
                "Float": "float32",
                "Double": "float64",
                "Half": "float16",
                "Long": "int64",
                "Int": "int32",
                "Short": "int16",
                "Char": "int8",
                "Byte": "uint8",
                "Bool": "bool",
            }.get(scalar, "void"),
            None,
        )
        if dtype is None:
            return None
        specs.append({"name": name, "datatype": torch_to_oip(dtype), "shape": list(sizes)})
    return specs if len(specs) == len(names) else None


def hinted_input_specs(hint, names: list[str]) -> list[dict] | None:
    if not isinstance(hint, dict) or not isinstance(hint.get("inputs"), list):
        return None
    by_name = {}
    for spec in hint["inputs"]:
        if (
            not isinstance(spec, dict)
            or spec.get("datatype") not in trials_module().OIP_TO_NUMPY
            or spec.get("datatype") == "BYTES"
        ):
            raise Rejected("The `signature` field needs inputs with a name, an OIP datatype and a shape.")
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= -1 and d != 0 for d in shape):
            raise Rejected(
                f"The `signature` input {spec.get('name')!r} needs a shape of positive ints or -1."
            )
        by_name[spec.get("name")] = {"name": spec["name"], "datatype": spec["datatype"], "shape": shape}
    if set(by_name) != set(names):
        raise Rejected(
            f"The `signature` field names inputs {sorted(map(str, by_name))}, but forward() takes {names}."
        )
    return [by_name[name] for name in names]


def inspect_torch_export(path: str, request: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise Rejected(f"torch.export cannot load the archive: {exc}") from exc
    placeholders = {node.name: node for node in program.graph.nodes if node.op == "placeholder"}
    inputs = []
    for name in program.graph_signature.user_inputs:
        value = placeholders[name].meta.get("val") if name in placeholders else None
        if not isinstance(value, torch.Tensor):
            raise Rejected(f"The input {name!r} is not a tensor; only tensor inputs are supported.")
        inputs.append({"name": name, "datatype": torch_to_oip(value.dtype), "shape": symbolic_shape(value)})
    output_node = next(node for node in program.graph.nodes if node.op == "output")
    values = [arg.meta.get("val") for arg in output_node.args[0] if hasattr(arg, "meta")]
    if not values or not all(isinstance(v, torch.Tensor) for v in values):
        raise Rejected("The exported program must return tensors.")
    names = ["output"] if len(values) == 1 else [f"output_{i}" for i in range(len(values))]
    outputs = [
        {"name": n, "datatype": torch_to_oip(v.dtype), "shape": symbolic_shape(v)}
        for n, v in zip(names, values, strict=True)
    ]
    names = [spec["name"] for spec in inputs]
    with torch.no_grad():
        _, note = checked_trial_run(torch_runner(program.module(), names), inputs, request)
    return {"format": "torch-export", "signature": {"inputs": inputs, "outputs": outputs}, "note": note}


def symbolic_shape(tensor) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in tensor.shape]


# --- Entry point --------------------------------------------------------------------------------------------


def inspect(request: dict) -> dict:
    path = request["path"]
    with open(path, "rb") as handle:
        head = handle.read(512)
    kind = sniff(head)
    if reason := refusal(kind):
        raise Rejected(reason)
    if kind == "zip":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise Rejected(f"The zip archive is corrupt or truncated: {exc}") from exc
        with archive:
            check_zip(archive, max_total=request["max_expanded_bytes"])
            archive_kind = classify_archive(archive.namelist())
            try:
                scan_archive(archive, kind=archive_kind, max_total=request["max_expanded_bytes"])
            except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
                raise Rejected(f"The zip archive is corrupt: {exc}") from exc
        if request.get("scan_only"):
            return {"format": archive_kind, "signature": {}}
        if archive_kind == "torchscript":
            return inspect_torchscript(path, request)
        return inspect_torch_export(path, request)
    if kind == "protobuf":
        if request.get("scan_only"):
            return {"format": "onnx", "signature": {}}
        return inspect_onnx(path, request)
    if kind == "gguf":
        from marketplace.sandbox.inspect_gguf import inspect_gguf

        return inspect_gguf(path, request)
    raise Rejected(refusal("unknown"))


def main() -> None:
    verdict_main(inspect, refusal=Rejected, limits="validation", verb="inspect")


if __name__ == "__main__":
    main()
