"""The trusted side of the LLM hosts: one confined host process per GGUF model per machine.

A web process that needs a model connects to its host's Unix socket (`LLM_HOST_DIR/<key>.sock`). When no
host answers, it takes the model's lock file (so that only one process starts it), makes the listening
socket itself, and starts `host.py` under `confine.spawn` with that socket as an inherited descriptor, the
model file bind-mounted read-only and a private writable folder: the host cannot create a socket of its own.
Every web process then connects to the same host, whose engine batches their sequences together.

The host belongs to the process that started it (bubblewrap's --die-with-parent), started from a thread that
lives as long as that process. It exits by itself when idle for `LLM_KEEP_ALIVE_SECONDS`; the socket file is
then refused and the next call starts a new host.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import select
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from marketplace.sandbox import confine
from marketplace.sandbox.validation import confinement

logger = logging.getLogger(__name__)

PROJECT_ROOT = confine.PROJECT_ROOT


def llm_setting(name: str, default):
    return getattr(settings, name, default)


@dataclass(frozen=True)
class HostSpec:
    """A model file and the engine settings a host runs it with."""

    sha256: str
    path: str
    context: int  # tokens per slot
    slots: int
    threads: int
    keep_alive: float
    queue_max: int = 16

    @property
    def key(self) -> str:
        settings_part = f"{self.context}-{self.slots}-{self.threads}"
        return f"{self.sha256[:24]}-{hashlib.sha256(settings_part.encode()).hexdigest()[:8]}"


def spec_for(*, sha256: str, path: str, context_length: int) -> HostSpec:
    """The host settings of a model: LLM_CONTEXT tokens per slot at most (the model's own context if less)."""
    context = min(int(llm_setting("LLM_CONTEXT", 2048)), context_length or 2048)
    threads = int(llm_setting("LLM_THREADS", 0)) or max(1, os.cpu_count() or 1)
    return HostSpec(
        sha256=sha256,
        path=path,
        context=context,
        slots=int(llm_setting("LLM_SLOTS", 4)),
        threads=threads,
        keep_alive=float(llm_setting("LLM_KEEP_ALIVE_SECONDS", 300)),
        queue_max=int(llm_setting("LLM_QUEUE_MAX", 16)),
    )


class HostUnavailable(RuntimeError):
    """The host could not be started (or did not become ready in time)."""


def host_dir() -> Path:
    """Where the hosts' sockets are: one folder per deployment (its data folder), so two deployments on one
    machine (a test run beside `make run`) never share a host. Short, for Unix socket paths' 108 bytes."""
    deployment = hashlib.sha256(str(Path(settings.DATA_DIR).resolve()).encode()).hexdigest()[:12]
    folder = Path(
        llm_setting("LLM_HOST_DIR", "")
        or Path(tempfile.gettempdir()) / f"modelport-llm-{os.geteuid()}-{deployment}"
    )
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def connect(spec: HostSpec, *, timeout: float) -> socket.socket:
    """A connection to the model's host, started first if no host answers."""
    path = host_dir() / f"{spec.key}.sock"
    connection = _try_connect(path)
    if connection is not None:
        return connection
    with open(host_dir() / f"{spec.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be starting it right now
        connection = _try_connect(path)
        if connection is not None:
            return connection
        _starter.submit(_start, spec, path, timeout).result()
    connection = _try_connect(path)
    if connection is None:
        raise HostUnavailable("The model's host started but does not answer.")
    return connection


def _try_connect(path: Path) -> socket.socket | None:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:  # no such socket, or its host is gone (refused)
        connection.close()
        return None
    return connection


# Hosts are started from this one long-lived thread: --die-with-parent ties a host to the thread that made it.
_starter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-host-starter")


def _start(spec: HostSpec, path: Path, timeout: float) -> None:
    confined = confinement()
    workdir = tempfile.mkdtemp(prefix="modelport-llm-host-")
    if confined.user and os.geteuid() == 0:
        os.chown(workdir, *confine.runner_identity(confined.user))
    with contextlib.suppress(FileNotFoundError):  # a socket left by a host that exited
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(128)
    ready_read, ready_write = os.pipe()
    started = time.monotonic()
    try:
        process = confine.spawn(
            [
                "-m",
                "inference.llm.host",
                "--model",
                spec.path,
                "--listen-fd",
                str(listener.fileno()),
                "--ready-fd",
                str(ready_write),
                "--workdir",
                workdir,
                "--context",
                str(spec.context),
                "--slots",
                str(spec.slots),
                "--threads",
                str(spec.threads),
                "--keep-alive",
                str(spec.keep_alive),
                "--queue-max",
                str(spec.queue_max),
            ],
            confinement=confined,
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": workdir,
                "TMPDIR": workdir,
                "LANG": "C.UTF-8",
                "PYTHONDONTWRITEBYTECODE": "1",
            },
            cwd=PROJECT_ROOT,  # `-m inference.llm.host` (in the sandbox, the project's code alone)
            read_only=(spec.path,),
            writable=(workdir,),
            pass_fds=(listener.fileno(), ready_write),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except BaseException:
        os.close(ready_read)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        os.close(ready_write)
        listener.close()  # the host's copy is the only one now: it dies with the host
    threading.Thread(target=_reap, args=(process, path, workdir), daemon=True, name="llm-host-reaper").start()
    try:
        ready, _, _ = select.select([ready_read], [], [], timeout)
        line = os.read(ready_read, 4096) if ready else b""
    finally:
        os.close(ready_read)
    if b'"ready"' not in line:
        if process.poll() is None:
            os.killpg(process.pid, 9)
        raise HostUnavailable("The model's host did not start (the model may not fit its limits).")
    logger.info(
        "LLM host for %s started in %.2f s (pid %s)",
        spec.sha256[:12],
        time.monotonic() - started,
        process.pid,
    )


def _reap(process: subprocess.Popen, path: Path, workdir: str) -> None:
    process.wait()
    shutil.rmtree(workdir, ignore_errors=True)
    logger.info("LLM host %s exited (status %s)", process.pid, process.returncode)
