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
