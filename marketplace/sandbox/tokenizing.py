"""Tokenizers off the web's threads: uploaded tokenizer.json files run in confined child processes
(`tokenize_child.py`) under a time limit (INFERENCE_TOKENIZER_TIME_LIMIT), for the upload check and for every
text call. A child that answers late is killed, and the caller gets a TextError (a 400) that says so, while
the process's other threads go on serving.

Each process keeps a few children (one per concurrent text call, up to MAX_CHILDREN), started on demand and
reused; a child keeps the tokenizers it was sent, by the tokenizer's sha256 and the model's inputs.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from django.conf import settings

from marketplace.tokenization import TextError

from . import confine, tokenize_child
from .tokenize_child import FrameError, frame_receive, frame_send
from .validation import SAFE_ENVIRONMENT, confinement

CHILD_SCRIPT = Path(tokenize_child.__file__).resolve()
MAX_CHILDREN = 4
MAX_REPLY_BYTES = 256 << 20
MEMORY_MB = 2048


class TokenizerChild:
    def __init__(self):
        to_child, self.to_child = os.pipe()
        self.from_child, from_child = os.pipe()
        try:
            self.process = confine.spawn(
                [str(CHILD_SCRIPT), str(to_child), str(from_child)],
                confinement=confinement(),
                env=dict(SAFE_ENVIRONMENT, HOME="/tmp", TOKENIZERS_PARALLELISM="false"),  # noqa: S108
                address_space_mb=MEMORY_MB,
                isolated=True,
                pass_fds=(to_child, from_child),
            )
        finally:
            os.close(to_child)
            os.close(from_child)
        self.held: set[str] = set()

    def ask(self, header: dict, blobs: list[bytes], timeout: float) -> tuple[dict, list[bytes]]:
        frame_send(self.to_child, header, blobs)
        answer, arrays = frame_receive(
            self.from_child, limit=MAX_REPLY_BYTES, deadline=time.monotonic() + timeout
        )
        self.held = set(answer.get("held", []))
        return answer, arrays

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        for fd in (self.to_child, self.from_child):
            os.close(fd)


class Tokenizers:
    """The children of this process."""

    def __init__(self):
        self.idle: list[TokenizerChild] = []
        self.lock = threading.Lock()
        self.slots = threading.BoundedSemaphore(MAX_CHILDREN)
        self.pid = os.getpid()

    def _call(self, header: dict, blob_for: Callable[[TokenizerChild], list[bytes]]) -> tuple[dict, list]:
        limit = settings.INFERENCE_TOKENIZER_TIME_LIMIT
        with self.slots:
            with self.lock:
                child = self.idle.pop() if self.idle else None
            child = child or TokenizerChild()
            try:
                reply = child.ask(header, blob_for(child), limit)
            except TimeoutError:
                child.kill()
                raise TextError(
                    f"the model's tokenizer took longer than {limit:g} s on this text and was stopped"
                ) from None
            except (FrameError, OSError, ValueError):
                child.kill()
                raise TextError("the model's tokenizer crashed on this text") from None
            with self.lock:
                self.idle.append(child)
            return reply

    def check(self, raw: bytes) -> str | None:
        """The reason `raw` is not a usable tokenizer.json (it must load and encode a sample), or None."""
        try:
            answer, _ = self._call({"op": "check"}, lambda child: [raw])
        except TextError as exc:
            return f"The tokenizer fails on a sample sentence: {exc}."
        return answer["reason"]

    def encode(
        self, *, key: str, load: Callable[[], bytes], inputs: list[dict], texts: list[str]
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The model's token tensors for `texts`, and their attention mask; TextError when they cannot be
        had. `load()` gives the tokenizer.json, read only for a child that does not hold it yet."""
        header = {"op": "encode", "key": key, "inputs": inputs, "texts": texts}
        answer, blobs = self._call(header, lambda child: [] if key in child.held else [load()])
        if not answer["ok"]:
            raise TextError(answer["error"])
        arrays = {
            spec["name"]: np.frombuffer(blob, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
            for spec, blob in zip(answer["arrays"], blobs, strict=True)
        }
        mask = arrays.pop("")
        return arrays, mask


_tokenizers: Tokenizers | None = None
_tokenizers_lock = threading.Lock()


def tokenizers() -> Tokenizers:
    """This process's children (a forked process starts its own)."""
    global _tokenizers
    with _tokenizers_lock:
        if _tokenizers is None or _tokenizers.pid != os.getpid():
            _tokenizers = Tokenizers()
        return _tokenizers


def tokenizer_check(raw: bytes) -> str | None:
    return tokenizers().check(raw)
