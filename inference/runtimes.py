"""What the trusted side knows of runtimes: platform names, and model files in this machine's cache.

Models are opened and run only in runner processes (`inference.runners`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage

PLATFORMS = {
    "onnx": "onnxruntime_onnx",
    "torchscript": "pytorch_libtorch",
    "torch-export": "pytorch_libtorch",
}


class ModelFileUnavailable(RuntimeError):
    pass


def platform_of(format_name: str) -> str:
    return PLATFORMS.get(format_name, "")


def local_model_path(*, sha256: str, file_name: str) -> Path:
    """The model file in this machine's cache, copied from storage (and its sha256 checked) on first use."""
    cache_dir = Path(settings.INFERENCE_MODEL_CACHE_DIR)
    path = cache_dir / sha256
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False, prefix=".part-") as part:
        try:
            with default_storage.open(file_name, "rb") as source:
                for chunk in iter(lambda: source.read(1 << 20), b""):
                    digest.update(chunk)
                    part.write(chunk)
        except OSError as exc:
            os.unlink(part.name)
            raise ModelFileUnavailable(f"the model file is not available: {exc}") from exc
    if digest.hexdigest() != sha256:
        os.unlink(part.name)
        raise ModelFileUnavailable("the model file in storage does not match its sha256")
    os.chmod(part.name, 0o644)  # runners may run as another user: they read it, nothing more
    os.replace(part.name, path)  # atomic: another process may be copying the same file
    return path
