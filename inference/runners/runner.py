"""A runner process: `python -m inference.runners.runner --in-fd N --out-fd M …`, started by the pool.

It opens and runs model files, which may be hostile, so it is kept apart from everything of value: it never
imports Django, its environment holds no secrets, it has no database or network connection (its only channel
is a pair of pipes to its pool), and it runs under a memory limit and the pool's time limit. Whatever a model
does, the worst outcome is this process dying, and the pool replaces it."""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from .protocol import ChannelClosed, read_frame, write_frame
from .runtimes import OpenRequest, RuntimeFailure, Sessions

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * PAGE_SIZE


def serve(in_fd: int, out_fd: int, sessions: Sessions) -> None:
    write_frame(out_fd, {"ready": True, "pid": os.getpid(), "rss": resident_bytes()})
    while True:
        try:
            request, tensors = read_frame(in_fd)
        except ChannelClosed:
            return
        try:
            runtime = sessions.get(
                OpenRequest(
                    sha256=request["sha256"],
                    path=request["path"],
                    format=request["format"],
                    input_names=tuple(request["inputs"]),
                    output_names=tuple(request["outputs"]),
                ),
                request.get("size", 0),
            )
            outputs = runtime.run(tensors)
        except RuntimeFailure as exc:
            write_frame(
                out_fd, {"ok": False, "error": str(exc), "rss": resident_bytes(), "open": [*sessions.open]}
            )
            continue
        except MemoryError:
            write_frame(out_fd, {"ok": False, "error": "out of memory", "memory": True, "rss": 0})
            continue
        except Exception as exc:  # a model may raise anything; the caller gets its message
            traceback.print_exc()
            error = f"the model failed: {exc}"
            write_frame(
                out_fd, {"ok": False, "error": error, "rss": resident_bytes(), "open": [*sessions.open]}
            )
            continue
        # `open`: the models this runner keeps open, so its supervisor can count cache hits and evictions.
        write_frame(out_fd, {"ok": True, "rss": resident_bytes(), "open": [*sessions.open]}, outputs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--in-fd", type=int, required=True)
    parser.add_argument("--out-fd", type=int, required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--session-budget-mb", type=int, default=512)
    args = parser.parse_args()
    # A model that prints (TorchScript can) writes to stderr, never into the pool's channel.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(args.in_fd, args.out_fd, Sessions(args.session_budget_mb * 1024 * 1024, args.threads))


if __name__ == "__main__":
    main()
