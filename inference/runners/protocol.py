"""Frames between the trusted side and a runner: a 4-byte length, then a `pack_tensors` message.

Django-free on purpose: the runner imports it.
"""

from __future__ import annotations

import os
import select
import struct
import time

import numpy as np

from ..codec import pack_tensors, unpack_tensors

_LENGTH = struct.Struct("<Q")


class ChannelClosed(EOFError):
    pass


class FrameTooLarge(ValueError):
    def __init__(self, size: int, limit: int):
        super().__init__(f"a frame of {size} bytes, over the {limit} allowed")
        self.size, self.limit = size, limit


def write_frame(fd: int, header: dict, tensors: dict[str, np.ndarray] | None = None) -> None:
    message = pack_tensors(header, tensors or {})
    data = memoryview(_LENGTH.pack(len(message)) + message)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int, deadline: float | None = None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError()
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise ChannelClosed()
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(
    fd: int, *, limit: int | None = None, deadline: float | None = None
) -> tuple[dict, dict[str, np.ndarray]]:
    """The next frame. The trusted side reads a runner's with a `limit` on its size and a `deadline` on the
    whole of it: a runner that announces a huge answer, or sends half of one and stops, gets no further."""
    (length,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size, deadline))
    if limit is not None and length > limit:
        raise FrameTooLarge(length, limit)
    return unpack_tensors(_read_exact(fd, length, deadline))


def send_message(sock, message: bytes) -> None:
    sock.sendall(_LENGTH.pack(len(message)) + message)


def receive_message(sock) -> bytes:
    def exact(size: int) -> bytes:
        chunks, remaining = [], size
        while remaining:
            chunk = sock.recv(min(remaining, 1 << 20))
            if not chunk:
                raise ChannelClosed()
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    (length,) = _LENGTH.unpack(exact(_LENGTH.size))
    return exact(length)
