"""Run `inspect_file.py` on a model file in a confined child process with memory, CPU and time limits.

The child gets an environment with nothing but a PATH and thread counts: no SECRET_KEY, DATABASE_URL or broker
URLs can leak into a process that parses hostile files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from . import archives, confine, inspect_file

SANDBOX_SCRIPT = Path(inspect_file.__file__).resolve()
SAFE_ENVIRONMENT = {
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


@dataclass
class Inspection:
    ok: bool
    format: str = ""
    signature: dict = field(default_factory=dict)
    reason: str = ""
    # A ready model's caveat, e.g. that no synthetic input ran it (shown on the version).
    note: str = ""


def sniff_upload(head: bytes) -> str | None:
    """A reason to refuse the file at once from its first bytes (web process), or None to let the worker
    decide."""
    return archives.refusal(archives.sniff(head))


def run_sandboxed(
    arguments: list[str], *, workdir: str, timeout: float, file_size_mb: int = 1
) -> subprocess.CompletedProcess:
    """Run `python -I <arguments>` with the validation limits and a secret-free environment.

    `file_size_mb` bounds every file the child writes: the upload check writes none; the optimizer writes the
    quantized model."""
    process = subprocess.Popen(
        confine.command(
            arguments,
            address_space_mb=settings.MODEL_VALIDATION_MEMORY_MB,
            cpu_seconds=int(timeout),
            file_size_mb=file_size_mb,
            isolated=True,
        ),
        cwd=workdir,
        env=dict(SAFE_ENVIRONMENT, HOME=workdir, TMPDIR=workdir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def inspect_model_file(
    path: str | os.PathLike,
    *,
    signature_hint: dict | None = None,
    scan_only: bool = False,
    example: dict | list | str | None = None,
    tokenizer: str | os.PathLike | None = None,
) -> Inspection:
    """Identify, check and trial-run a model file in a sandboxed child; never raises for a bad file.

    With an `example` (a predict body's `inputs`) the trial run uses it and the model must run on it. With a
    `tokenizer` (a tokenizer.json's path) the model must take its tokens, and the trial run feeds it the
    example's text (or a sample sentence) tokenized.
    """
    timeout = settings.MODEL_VALIDATION_TIMEOUT_SECONDS
    request = {
        "path": str(Path(path).resolve()),
        "signature": signature_hint,
        "scan_only": scan_only,
        "max_expanded_bytes": settings.MODEL_VALIDATION_MAX_EXPANDED_BYTES,
        "example": example,
        "tokenizer": str(Path(tokenizer).resolve()) if tokenizer else None,
    }
    with tempfile.TemporaryDirectory(prefix="modelport-sandbox-") as workdir:
        request_path = Path(workdir) / "request.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")
        try:
            result = run_sandboxed([str(SANDBOX_SCRIPT), str(request_path)], workdir=workdir, timeout=timeout)
        except subprocess.TimeoutExpired:
            return Inspection(ok=False, reason=f"Validation took longer than {timeout} s and was stopped.")
    stdout, stderr = result.stdout, result.stderr
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith(inspect_file.RESULT_MARKER):
            answer = json.loads(line[len(inspect_file.RESULT_MARKER) :])
            if answer.get("ok"):
                return Inspection(
                    ok=True,
                    format=answer["format"],
                    signature=answer["signature"],
                    note=answer.get("note", ""),
                )
            return Inspection(ok=False, reason=answer["reason"])
    if result.returncode in (-signal.SIGKILL, -signal.SIGXCPU):
        return Inspection(ok=False, reason="Validation ran out of its CPU-time limit.")
    tail = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if "alloc" in tail[0].lower() or "memory" in tail[0].lower() or result.returncode == -signal.SIGABRT:
        return Inspection(ok=False, reason="The model needs more memory than validation allows.")
    return Inspection(ok=False, reason=f"The model crashed the validator (exit status {result.returncode}).")
