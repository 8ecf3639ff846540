"""What the trusted side knows of runtimes: platform names, and model files in this machine's cache.

Models are opened and run only in runner processes (`inference.runners`).
"""

from __future__ import annotations

from pathlib import Path

from marketplace import files

PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "torch-export": "pytorch_libtorch",
}

# A model file that cannot be had (missing, storage out of reach, not its sha256): the call fails, a 503.
ModelFileUnavailable = files.FileUnavailable


def platform_of(format_name: str) -> str:
    return PLATFORMS.get(format_name, "")


def local_model_path(*, sha256: str, file_name: str, file_key: str = "") -> Path:
    """The model file in this machine's cache, copied from storage (decrypted when `file_key` is its envelope,
    and its sha256 checked) on first use."""
    return files.local_copy(name=file_name, sha256=sha256, key=file_key)
