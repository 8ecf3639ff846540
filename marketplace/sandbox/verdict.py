"""A confined child's answer travels on a file descriptor of its own, never on stdout.

A model may print (TorchScript can), so the child sends its standard output to stderr before it loads
anything, and writes its verdict, one JSON line, to the inherited descriptor named in its environment. The
trusted side (`validation.run_sandboxed`) takes the last complete line, and only from a child that exited with
status 0: a model that writes a forged verdict and then dies, or hangs, has it ignored. Standard library only.
"""

from __future__ import annotations

import json
import os
import sys

# The most the trusted side reads of a verdict; past it the answer is refused as malformed.
MAX_VERDICT_BYTES = 8 << 20


def verdict_channel(fd: int) -> int:
    """Called first by a child: from here on its stdout is its stderr."""
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return fd


def verdict_send(fd: int, answer: dict) -> None:
    data = (json.dumps(answer) + "\n").encode()
    while data:
        data = data[os.write(fd, data) :]


def verdict_parse(data: bytes) -> dict | None:
    """The last complete JSON line of what the child wrote, or None."""
    lines = data.split(b"\n")[:-1]  # a line not ended by a newline is incomplete
    for line in reversed(lines):
        if not line.strip():
            continue
        try:
            answer = json.loads(line)
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None
    return None


def verdict_main(work, *, refusal: type[Exception], limits: str, verb: str) -> None:
    """A confined child's whole run: its request from the file named by argv[1], `work(request)`'s answer (or
    the reason a `refusal` gives) as its verdict, then an immediate exit (runtimes' destructors are slow and
    irrelevant here). `limits` and `verb` name the child in its messages ("validation", "inspect")."""
    fd = verdict_channel(int(os.environ["MODELPORT_VERDICT_FD"]))
    # The request is a file: an `example` can be larger than one command-line argument may be.
    with open(sys.argv[1], encoding="utf-8") as handle:
        request = json.load(handle)
    try:
        answer = {"ok": True, **work(request)}
    except refusal as exc:
        answer = {"ok": False, "reason": str(exc)[:2000]}
    except MemoryError:
        answer = {"ok": False, "reason": f"The model needs more memory than {limits} allows."}
    except RecursionError:
        answer = {"ok": False, "reason": f"The model is nested too deeply to {verb}."}
    verdict_send(fd, answer)
    os._exit(0)
