"""Put this process under limits, then become the program that follows `--`: the one way untrusted model files
are opened (the upload sandbox and the inference runners).

`python -I confine.py [--address-space-mb N] [--cpu-seconds N] [--file-size-mb N] [--parent PID] -- ARGS…`
sets the limits on itself and `execv`s `python ARGS…`, which inherits them. The limits are set here, after
the fork, rather than in a `preexec_fn`: a `preexec_fn` runs Python between fork and exec, which can deadlock
in the child of a threaded parent (the runner pool's supervisor is one), leaving the parent's `Popen` waiting
forever. Only the standard library is used, and nothing here reads the untrusted file.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import resource
import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38


def confine(*, address_space_mb: int, cpu_seconds: int, file_size_mb: int, parent: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if parent:
        # Killed when the thread that started it ends; if that happened already, go now.
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if address_space_mb:
        limit = address_space_mb << 20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_seconds:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    if file_size_mb:
        limit = file_size_mb << 20
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def command(
    program: list[str],
    *,
    address_space_mb: int = 0,
    cpu_seconds: int = 0,
    file_size_mb: int = 0,
    parent: int = 0,
    isolated: bool = False,
) -> list[str]:
    """The argv that runs `python [-I] program…` under these limits (0: no such limit)."""
    options = [
        f"--address-space-mb={address_space_mb}",
        f"--cpu-seconds={cpu_seconds}",
        f"--file-size-mb={file_size_mb}",
        f"--parent={parent}",
    ]
    return [sys.executable, "-I", __file__, *options, "--", *(["-I"] if isolated else []), *program]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address-space-mb", type=int, default=0)
    parser.add_argument("--cpu-seconds", type=int, default=0)
    parser.add_argument("--file-size-mb", type=int, default=0)
    parser.add_argument("--parent", type=int, default=0)
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    confine(
        address_space_mb=args.address_space_mb,
        cpu_seconds=args.cpu_seconds,
        file_size_mb=args.file_size_mb,
        parent=args.parent,
    )
    os.execv(sys.executable, [sys.executable, *program])  # noqa: S606 - argv, no shell


if __name__ == "__main__":
    main()
