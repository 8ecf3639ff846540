"""Run `inspect_file.py` on a model file in a confined child process with memory, CPU and time limits.

The child runs under `confine.spawn` (bubblewrap: its own unprivileged user, no network, a read-only view of
the runtime and of the one file it checks, seccomp) with an environment holding nothing but a PATH and thread
counts: no SECRET_KEY, DATABASE_URL or broker URLs can leak into a process that parses hostile files. Its
verdict comes on a descriptor of its own (`verdict.py`) and counts only when it exited with status 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from . import archives, confine, inspect_file
from .verdict import MAX_VERDICT_BYTES, verdict_parse

logger = logging.getLogger(__name__)

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


@dataclass
class SandboxRun:
    returncode: int
    stderr: bytes
    verdict: dict | None  # None unless the child exited with status 0 and wrote one

    @property
    def signal(self) -> int:
        return confine.exit_signal(self.returncode)


def confinement() -> confine.Confinement:
    """How this host confines the children that open uploaded files (INFERENCE_SANDBOX and
    INFERENCE_RUNNER_USER)."""
    if not settings.INFERENCE_SANDBOX:
        logger.warning("INFERENCE_SANDBOX=off: uploaded model files are opened without kernel confinement")
    return confine.Confinement(sandbox=settings.INFERENCE_SANDBOX, user=settings.INFERENCE_RUNNER_USER)


def refuse_unconfined() -> None:
    """At the worker's start: ImproperlyConfigured, saying why, when the children that open uploaded files
    could not be confined as the settings ask (no bwrap, namespaces refused, root without a runner user)."""
    from django.core.exceptions import ImproperlyConfigured

    confined = confinement()
    try:
        if os.geteuid() == 0:
            if not confined.user:
                raise confine.SandboxUnavailable(
                    "the worker runs as root and INFERENCE_RUNNER_USER is not set: untrusted model code "
                    "would run as root"
                )
            confine.runner_identity(confined.user)
        if confined.sandbox and (problem := confine.sandbox_problem()):
            raise confine.SandboxUnavailable(
                f"{problem}. Set INFERENCE_SANDBOX=off to run uploaded models unconfined (development only)"
            )
        if confined.sandbox:
            # Compiled now, in the main thread before Celery forks its pool: loading libseccomp runs
            # `ldconfig -p`, and a pool process forked meanwhile would hold its pipe open, stalling the runner
            # slot thread that first needed the filter until that process exits.
            confine.seccomp_program()
    except confine.SandboxUnavailable as exc:
        raise ImproperlyConfigured(f"Refusing to run uploaded models: {exc}") from None


def sniff_upload(head: bytes) -> str | None:
    """A reason to refuse the file at once from its first bytes (web process), or None to let the worker
    decide."""
    return archives.refusal(archives.sniff(head))


def run_sandboxed(
    arguments: list[str],
    *,
    workdir: str,
    timeout: float,
    read_only: tuple[str, ...] = (),
    file_size_mb: int = 1,
) -> SandboxRun:
    """Run `python -I <arguments>` confined, with the validation limits and a secret-free environment.

    The child sees `workdir` (writable: its request, and the optimizer's output) and the `read_only` files,
    and nothing else of the host but the runtime. `file_size_mb` bounds every file it writes. Its verdict
    descriptor is the environment's MODELPORT_VERDICT_FD."""
    confined = confinement()
    if confined.user and os.geteuid() == 0:
        os.chown(workdir, *confine.runner_identity(confined.user))  # the child's, to write its output in
    verdict_read, verdict_write = os.pipe()
    try:
        process = confine.spawn(
            arguments,
            confinement=confined,
            env=dict(SAFE_ENVIRONMENT, HOME=workdir, TMPDIR=workdir, MODELPORT_VERDICT_FD=str(verdict_write)),
            cwd=workdir,
            read_only=read_only,
            writable=(workdir,),
            address_space_mb=settings.MODEL_VALIDATION_MEMORY_MB,
            cpu_seconds=int(timeout),
            file_size_mb=file_size_mb,
            isolated=True,
            pass_fds=(verdict_write,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except BaseException:
        os.close(verdict_read)
        raise
    finally:
        os.close(verdict_write)
    received = bytearray()
    reader = threading.Thread(target=_read_verdict, args=(verdict_read, received), daemon=True)
    reader.start()
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    finally:
        reader.join(5)
    verdict = verdict_parse(bytes(received)) if process.returncode == 0 else None
    return SandboxRun(returncode=process.returncode, stderr=stderr[-65536:], verdict=verdict)


def _read_verdict(fd: int, into: bytearray) -> None:
    try:
        while chunk := os.read(fd, 65536):
            if len(into) < MAX_VERDICT_BYTES:
                into += chunk
    finally:
        os.close(fd)


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
            result = run_sandboxed(
                [str(SANDBOX_SCRIPT), str(request_path)],
                workdir=workdir,
                timeout=timeout,
                read_only=tuple(path for path in (request["path"], request["tokenizer"]) if path),
            )
        except subprocess.TimeoutExpired:
            return Inspection(ok=False, reason=f"Validation took longer than {timeout} s and was stopped.")
    answer = result.verdict
    if answer is not None and "ok" in answer:
        if answer["ok"]:
            return Inspection(
                ok=True, format=answer["format"], signature=answer["signature"], note=answer.get("note", "")
            )
        return Inspection(ok=False, reason=str(answer.get("reason", "The model was refused.")))
    if result.signal in (signal.SIGKILL, signal.SIGXCPU):
        return Inspection(ok=False, reason="Validation ran out of its CPU-time limit.")
    tail = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
    if "alloc" in tail[0].lower() or "memory" in tail[0].lower() or result.signal == signal.SIGABRT:
        return Inspection(ok=False, reason="The model needs more memory than validation allows.")
    if result.returncode == 0:
        return Inspection(ok=False, reason="The validator gave no verdict on this model.")
    return Inspection(ok=False, reason=f"The model crashed the validator (exit status {result.returncode}).")
