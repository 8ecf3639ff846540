"""ONNX Runtime and PyTorch, as a runner uses them: open a local model file, run it on numpy tensors.

Django-free on purpose: only runner processes import this module.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np


class RuntimeFailure(RuntimeError):
    """The model could not be opened or run: the message is shown as the prediction's error."""


@dataclass(frozen=True)
class OpenRequest:
    sha256: str
    path: str
    format: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


class Runtime:
    def __init__(self, request: OpenRequest, threads: int):
        self.input_names = list(request.input_names)
        self.output_names = list(request.output_names)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError


class OnnxRuntime(Runtime):
    def __init__(self, request: OpenRequest, threads: int):
        super().__init__(request, threads)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads burn the cores that the other runners and the web server need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                request.path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise RuntimeFailure(f"ONNX Runtime could not open the model: {exc}") from exc
        self.string_inputs = {i.name for i in self.session.get_inputs() if i.type == "tensor(string)"}
        if not self.output_names:
            self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {}
        for name, array in inputs.items():
            if name in self.string_inputs:
                # ONNX Runtime takes str for string tensors (it would stringify bytes objects as "b'…'").
                try:
                    feed[name] = np.array(
                        [item.decode() for item in array.ravel().tolist()], dtype=object
                    ).reshape(array.shape)
                except UnicodeDecodeError:
                    raise RuntimeFailure(f"input {name!r}: ONNX string tensors must be UTF-8") from None
            else:
                feed[name] = array
        try:
            results = self.session.run(self.output_names, feed)
        except Exception as exc:
            raise RuntimeFailure(f"the model failed: {exc}") from exc
        outputs = {}
        for name, result in zip(self.output_names, results, strict=True):
            if result.dtype == object or result.dtype.kind == "U":
                encoded = np.empty(result.size, dtype=object)
                encoded[:] = [
                    item.encode() if isinstance(item, str) else bytes(item) for item in result.ravel()
                ]
                result = encoded.reshape(result.shape)
            outputs[name] = result
        return outputs


_torch = None


def _configured_torch(threads: int):
    global _torch
    if _torch is None:
        import torch

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        _torch = torch
    return _torch


class TorchRuntime(Runtime):
    def __init__(self, request: OpenRequest, threads: int):
        super().__init__(request, threads)
        torch = self.torch = _configured_torch(threads)
        try:
            if request.format == "torch-export":
                self.module = torch.export.load(request.path).module()
            else:
                self.module = torch.jit.load(request.path, map_location="cpu")
                self.module.eval()
        except Exception as exc:
            raise RuntimeFailure(f"PyTorch could not open the model: {exc}") from exc

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        arguments = []
        for name in self.input_names:
            array = inputs[name]
            if array.dtype == object:
                raise RuntimeFailure(f"input {name!r}: PyTorch models take no BYTES tensors")
            arguments.append(torch.from_numpy(np.ascontiguousarray(array)))
        try:
            with torch.inference_mode():
                result = self.module(*arguments)
        except Exception as exc:
            raise RuntimeFailure(f"the model failed: {exc}") from exc
        if isinstance(result, dict):
            values = (
                [result[name] for name in self.output_names] if self.output_names else list(result.values())
            )
        elif isinstance(result, list | tuple):
            values = list(result)
        else:
            values = [result]
        names = self.output_names or [f"output_{i}" for i in range(len(values))]
        if len(values) != len(names):
            raise RuntimeFailure(
                f"the model returned {len(values)} outputs, its signature names {len(names)}"
            )
        try:
            return {name: value.detach().cpu().numpy() for name, value in zip(names, values, strict=True)}
        except AttributeError:
            raise RuntimeFailure("the model returned something other than tensors") from None


RUNTIMES = {"onnx": OnnxRuntime, "torchscript": TorchRuntime, "torch-export": TorchRuntime}


class Sessions:
    """Open models of this runner, least recently used first out when over the memory budget."""

    # ONNX Runtime and PyTorch keep roughly the weights plus working buffers: estimate by the file size.
    MEMORY_FACTOR = 2

    def __init__(self, budget_bytes: int, threads: int):
        self.budget = budget_bytes
        self.threads = threads
        self.open: OrderedDict[str, tuple[Runtime, int]] = OrderedDict()

    def get(self, request: OpenRequest, size: int) -> Runtime:
        entry = self.open.get(request.sha256)
        if entry is not None:
            self.open.move_to_end(request.sha256)
            return entry[0]
        runtime_class = RUNTIMES.get(request.format)
        if runtime_class is None:
            raise RuntimeFailure(f"no runtime for format {request.format!r}")
        runtime = runtime_class(request, self.threads)
        self.open[request.sha256] = (runtime, size * self.MEMORY_FACTOR)
        while len(self.open) > 1 and sum(cost for _, cost in self.open.values()) > self.budget:
            self.open.popitem(last=False)
        return runtime
