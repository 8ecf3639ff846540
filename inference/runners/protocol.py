"""Frames between the trusted side and a runner: a 4-byte length, then a `pack_tensors` message.

Django-free on purpose: the runner imports it.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from ..codec import pack_tensors, unpack_tensors

_LENGTH = struct.Struct("<Q")


class ChannelClosed(EOFError):
    pass


def write_frame(fd: int, header: dict, tensors: dict[str, np.ndarray] | None = None) -> None:
    message = pack_tensors(header, tensors or {})
    data = memoryview(_LENGTH.pack(len(message)) + message)
    while data:
        written = os.write(fd, data)
        data = data[written:]


def _read_exact(fd: int, size: int) -> bytes:
    chunks, remaining = [], size
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise ChannelClosed()
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int) -> tuple[dict, dict[str, np.ndarray]]:
    (length,) = _LENGTH.unpack(_read_exact(fd, _LENGTH.size))
    return unpack_tensors(_read_exact(fd, length))


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
