"""A runner process: `python -m inference.runners.runner --in-fd N --out-fd M …`, started by the pool.

It opens and runs model files, which may be hostile, so it is kept apart from everything of value: it runs
confined by the kernel (`marketplace/sandbox/confine.py`: its own unprivileged user, no network, a read-only
filesystem with nothing but the runtime, seccomp), it never imports Django, its environment holds no secrets,
its only channels are a pair of pipes to its pool and a socket on which the pool hands it each model file as
an open read-only descriptor, and it runs under a memory limit and the pool's time limit. Whatever a model
does, the worst outcome is this process dying, and the pool replaces it."""

from __future__ import annotations

import argparse
import os
import socket
import sys
import traceback

from .protocol import ChannelClosed, read_frame, write_frame
from .runtimes import OpenRequest, RuntimeFailure, Sessions

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_SIZE


def received_file(handoff: socket.socket) -> int:
    """The model file the pool sent with this request, as a descriptor."""
    _, fds, _, _ = socket.recv_fds(handoff, 16, 1)
    if not fds:
        raise ChannelClosed()
    return fds[0]


def serve(in_fd: int, out_fd: int, handoff: socket.socket, sessions: Sessions) -> None:
    write_frame(out_fd, {"ready": True, "pid": os.getpid(), "rss": resident_bytes()})
    while True:
        try:
            request, tensors = read_frame(in_fd)
            fd = received_file(handoff) if request.get("handoff") else -1
        except ChannelClosed:
            return
        try:
            runtime = sessions.get(
                OpenRequest(
                    sha256=request["sha256"],
                    # Through the descriptor: this process has no path to any stored file.
                    path=f"/proc/self/fd/{fd}",
                    format=request["format"],
                    input_names=tuple(request["inputs"]),
                    output_names=tuple(request["outputs"]),
                ),
                request.get("size", 0),
            )
            if fd >= 0:  # the runtime has read what it needs
                os.close(fd)
                fd = -1
            outputs = runtime.run(tensors)
        except RuntimeFailure as exc:
            close_quietly(fd)
            write_frame(
                out_fd, {"ok": False, "error": str(exc), "rss": resident_bytes(), "open": [*sessions.open]}
            )
            continue
        except MemoryError:
            close_quietly(fd)
            write_frame(out_fd, {"ok": False, "error": "out of memory", "memory": True, "rss": 0})
            continue
        except Exception as exc:  # a model may raise anything; the caller gets its message
            close_quietly(fd)
            traceback.print_exc()
            error = f"the model failed: {exc}"
            write_frame(
                out_fd, {"ok": False, "error": error, "rss": resident_bytes(), "open": [*sessions.open]}
            )
            continue
        # `open`: the models this runner keeps open, so its supervisor can count cache hits and evictions.
        write_frame(out_fd, {"ok": True, "rss": resident_bytes(), "open": [*sessions.open]}, outputs)


def close_quietly(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in-fd", type=int, required=True)
    parser.add_argument("--out-fd", type=int, required=True)
    parser.add_argument("--handoff-fd", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--session-budget-mb", type=int, default=512)
    args = parser.parse_args()
    # A model that prints (TorchScript can) writes to stderr, never into the pool's channel.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    handoff = socket.socket(fileno=args.handoff_fd)
    serve(args.in_fd, args.out_fd, handoff, Sessions(args.session_budget_mb * 1024 * 1024, args.threads))


if __name__ == "__main__":
    main()
