"""Runtimes: open a ready model version once per worker process and run it on numpy tensors.

Sessions stay open in an LRU bounded by `INFERENCE_SESSION_MEMORY_MB`, keyed by the file's sha256; files are
copied from Django's storage into a local cache named by sha256, so a worker on another machine works the
same.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)


class RuntimeFailure(RuntimeError):
    """The model could not be opened or run: the message is shown as the prediction's error."""

    def __init__(self, message: str, *, timed_out: bool = False):
        super().__init__(message)
        self.timed_out = timed_out


@dataclass(frozen=True)
class VersionRef:
    """What a worker needs to open a version, without a database query."""

    version_id: int
    sha256: str
    format: str
    file_name: str
    size: int
    signature: dict


def threads_per_session() -> int:
    """Cores divided among the worker's processes, so prefork processes do not fight over the same cores."""
    configured = settings.INFERENCE_THREADS_PER_SESSION
    if configured > 0:
        return configured
    processes = int(os.environ.get("MODELPORT_WORKER_PROCESSES", "1") or 1)
    return max(1, (os.cpu_count() or 1) // max(1, processes))


class Runtime:
    """One open model. `run` takes and returns tensors by name (signature order for outputs)."""

    platform = ""

    def __init__(self, ref: VersionRef, path: Path):
        self.ref = ref
        self.input_names = [spec["name"] for spec in ref.signature.get("inputs", [])]
        self.output_names = [spec["name"] for spec in ref.signature.get("outputs", [])]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def run_with_limit(self, inputs: dict[str, np.ndarray], seconds: float | None) -> dict[str, np.ndarray]:
        """Run, giving up after `seconds` where the runtime can stop (else the hard limit applies)."""
        return self.run(inputs)


class OnnxRuntime(Runtime):
    platform = "onnxruntime_onnx"

    def __init__(self, ref: VersionRef, path: Path):
        super().__init__(ref, path)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads_per_session()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        # Spinning threads burn the cores that other worker processes and the web server need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise RuntimeFailure(f"ONNX Runtime could not open the model: {exc}") from exc
        self.string_inputs = {i.name for i in self.session.get_inputs() if i.type == "tensor(string)"}
        if not self.output_names:
            self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._decode(self._session_run(self._feed(inputs), None))

    def _feed(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
        return feed

    def run_with_limit(self, inputs: dict[str, np.ndarray], seconds: float | None) -> dict[str, np.ndarray]:
        if not seconds:
            return self.run(inputs)
        import onnxruntime

        options = onnxruntime.RunOptions()
        # A run inside ONNX Runtime does not see Celery's soft time limit signal; its terminate flag it does.
        timer = threading.Timer(seconds, setattr, (options, "terminate", True))
        timer.start()
        try:
            return self._decode(self._session_run(self._feed(inputs), options, seconds))
        finally:
            timer.cancel()

    def _session_run(self, feed, options, seconds=None):
        try:
            return self.session.run(self.output_names, feed, options)
        except Exception as exc:
            if options is not None and options.terminate:
                raise RuntimeFailure(
                    f"Timed out: the model ran past the {seconds:g} s time limit.", timed_out=True
                ) from exc
            raise RuntimeFailure(f"the model failed: {exc}") from exc

    def _decode(self, results) -> dict[str, np.ndarray]:
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


_torch_configured = False


def _configure_torch():
    global _torch_configured
    import torch

    if not _torch_configured:
        torch.set_num_threads(threads_per_session())
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass  # only settable before the first parallel work in the process
        _torch_configured = True
    return torch


class TorchRuntime(Runtime):
    platform = "pytorch_libtorch"

    def __init__(self, ref: VersionRef, path: Path):
        super().__init__(ref, path)
        torch = _configure_torch()
        self.torch = torch
        try:
            if ref.format == "torch-export":
                self.module = torch.export.load(str(path)).module()
            else:
                self.module = torch.jit.load(str(path), map_location="cpu")
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
        return {name: value.detach().cpu().numpy() for name, value in zip(names, values, strict=True)}


RUNTIMES = {"onnx": OnnxRuntime, "torchscript": TorchRuntime, "torch-export": TorchRuntime}


def platform_of(format_name: str) -> str:
    runtime = RUNTIMES.get(format_name)
    return runtime.platform if runtime else ""


def local_model_path(ref: VersionRef) -> Path:
    """The model file in this machine's cache, copied from storage (and its sha256 checked) on first use."""
    cache_dir = Path(settings.INFERENCE_MODEL_CACHE_DIR)
    path = cache_dir / ref.sha256
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False, prefix=".part-") as part:
        try:
            with default_storage.open(ref.file_name, "rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    part.write(chunk)
        except OSError as exc:
            os.unlink(part.name)
            raise RuntimeFailure(f"the model file is not available: {exc}") from exc
    if digest.hexdigest() != ref.sha256:
        os.unlink(part.name)
        raise RuntimeFailure("the model file in storage does not match its sha256")
    os.replace(part.name, path)  # atomic: another process may be copying the same file
    return path


class SessionCache:
    """Open runtimes of this process, least recently used first out when over the memory budget."""

    # ONNX Runtime and PyTorch keep roughly the weights plus working buffers: estimate by the file size.
    MEMORY_FACTOR = 2

    def __init__(self):
        self.sessions: OrderedDict[str, tuple[Runtime, int]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, ref: VersionRef) -> Runtime:
        with self.lock:
            entry = self.sessions.get(ref.sha256)
            if entry is not None:
                self.sessions.move_to_end(ref.sha256)
                return entry[0]
        runtime_class = RUNTIMES.get(ref.format)
        if runtime_class is None:
            raise RuntimeFailure(f"no runtime for format {ref.format!r}")
        runtime = runtime_class(ref, local_model_path(ref))
        cost = ref.size * self.MEMORY_FACTOR
        budget = settings.INFERENCE_SESSION_MEMORY_MB * 1024 * 1024
        with self.lock:
            self.sessions[ref.sha256] = (runtime, cost)
            while len(self.sessions) > 1 and sum(c for _, c in self.sessions.values()) > budget:
                evicted, _ = self.sessions.popitem(last=False)
                logger.info("closed model session %s (memory budget)", evicted[:12])
        return runtime

    def clear(self) -> None:
        with self.lock:
            self.sessions.clear()


sessions = SessionCache()


def runtime_for(ref: VersionRef) -> Runtime:
    return sessions.get(ref)
