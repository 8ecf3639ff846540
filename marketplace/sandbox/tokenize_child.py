"""A confined tokenizer process: uploaded tokenizer.json files are run here, never on the web's threads.

A tokenizer.json is data for the Rust `tokenizers` library, but its pre-tokenizer regexes are the uploader's
and can backtrack for as long as they like on a crafted text. So the trusted side (`tokenizing.py`) keeps a
few of these processes, confined like runners (`confine.spawn`), sends them the tokenizer and the texts, and
kills one that answers late. Run as `python -I tokenize_child.py IN_FD OUT_FD`; Django-free.

Frames, both ways: an 8-byte length, then a JSON header line, then the header's `blobs` concatenated (the
tokenizer.json going in, the token arrays coming out).
"""

from __future__ import annotations

import json
import os
import select
import struct
import sys
import time
from collections import OrderedDict

LENGTH = struct.Struct("<Q")
CACHED_TOKENIZERS = 16


class FrameError(OSError):
    """The other side closed, answered late or sent more than allowed."""


def frame_send(fd: int, header: dict, blobs: list[bytes] = ()) -> None:
    head = json.dumps({**header, "blobs": [len(blob) for blob in blobs]}).encode() + b"\n"
    body = b"".join([head, *blobs])
    data = memoryview(LENGTH.pack(len(body)) + body)
    while data:
        data = data[os.write(fd, data) :]


def frame_receive(
    fd: int, *, limit: int = 1 << 62, deadline: float | None = None
) -> tuple[dict, list[bytes]]:
    (length,) = LENGTH.unpack(_read(fd, LENGTH.size, deadline))
    if length > limit:
        raise FrameError(f"a frame of {length} bytes, over the {limit} allowed")
    body = _read(fd, length, deadline)
    head, _, rest = body.partition(b"\n")
    header = json.loads(head)
    blobs, offset = [], 0
    for size in header.pop("blobs", []):
        blobs.append(rest[offset : offset + size])
        offset += size
    return header, blobs


def _read(fd: int, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError()
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            raise FrameError("the other side closed its end")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def serve(in_fd: int, out_fd: int) -> None:
    from marketplace import tokenization

    loaded: OrderedDict[str, tuple[object, object]] = OrderedDict()
    while True:
        try:
            header, blobs = frame_receive(in_fd)
        except FrameError:
            return
        try:
            if header["op"] == "check":
                frame_send(out_fd, {"ok": True, "reason": tokenization.tokenizer_check(blobs[0])})
                continue
            key = header["key"]
            if blobs:
                tokenizer = tokenization.tokenizer_load(blobs[0])
                plan = tokenization.text_plan(tokenizer, header["inputs"])
                loaded[key] = (tokenization.tokenizer_configure(tokenizer, plan), plan)
                while len(loaded) > CACHED_TOKENIZERS:
                    loaded.popitem(last=False)
            if key not in loaded:
                frame_send(out_fd, {"ok": False, "error": "the tokenizer was not sent", "held": [*loaded]})
                continue
            loaded.move_to_end(key)
            tensors, mask = tokenization.encode_texts(*loaded[key], header["texts"])
            arrays = {**tensors, "": mask}
            described = [{"name": n, "dtype": a.dtype.str, "shape": list(a.shape)} for n, a in arrays.items()]
            frame_send(
                out_fd,
                {"ok": True, "arrays": described, "held": [*loaded]},
                [a.tobytes() for a in arrays.values()],
            )
        except (tokenization.TextError, tokenization.TokenizerError) as exc:
            frame_send(out_fd, {"ok": False, "error": str(exc), "held": [*loaded]})


def main() -> None:
    # Anything the library prints goes to stderr, never into the channel.
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(int(sys.argv[1]), int(sys.argv[2]))


if __name__ == "__main__":
    if not __package__:
        # Run as a script under `python -I`: the project's root goes last (see inspect_file.py).
        sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    main()
