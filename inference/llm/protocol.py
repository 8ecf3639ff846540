"""The JSON lines between the trusted side and a confined LLM host (`host.py`), one object per line.

Trusted side → host, on a connection: `{"op": "count" | "generate", "kind": "chat" | "completion",
"body": {…}}` (the body already checked against the API's allowlist). Host → trusted side:
- `count`: `{"prompt_tokens": n}`;
- `generate`: `{"text": "…", "n": completion tokens so far}` per piece, then
  `{"end": {"finish_reason", "prompt_tokens", "completion_tokens"}}`;
- either: `{"error": {"kind": "context" | "request" | "internal", "message": "…"}}`.
The host is not trusted: its lines are bounded in size and read field by field.
"""

from __future__ import annotations

import json
import socket

MAX_LINE_BYTES = 1 << 20


class HostGone(ConnectionError):
    """The host closed the connection (it exited, crashed, or stopped when idle) or sent nonsense."""


def line_encode(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


class LineReader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buffer = bytearray()

    def read(self) -> dict:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[:end])
                del self.buffer[: end + 1]
                try:
                    message = json.loads(line)
                except ValueError:
                    raise HostGone("the model host sent an unreadable line") from None
                if not isinstance(message, dict):
                    raise HostGone("the model host sent an unreadable line")
                return message
            if len(self.buffer) > MAX_LINE_BYTES:
                raise HostGone("the model host sent a line past the size limit")
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise HostGone(f"the model host's connection failed ({exc})") from None
            if not chunk:
                raise HostGone("the model host closed the connection")
            self.buffer += chunk
