"""The GGUF branch of the upload check (`inspect_file.py`), run in its confined child: nothing here imports
Django, and llama.cpp (whose GGUF parser has had memory-safety bugs) only ever runs here and in the confined
LLM hosts.

First a bounded walk over the header with plain reads: the version, the counts, every string and array
length, every tensor's dimensions, checked against the file's size and sane maxima before anything is
allocated. Then the `gguf` package's reader reads the values, the tensors' sizes are checked to lie within
the file without overlapping, and the card's summary is taken (`llm`). Last, a trial generation of a few
tokens in llama.cpp's engine, through the chat template when the file has one.
"""

from __future__ import annotations

import os
import struct

from marketplace.sandbox.archives import Rejected

MAGIC = b"GGUF"
VERSIONS = (2, 3)
MAX_TENSORS = 1 << 16
MAX_KEYS = 1 << 16
MAX_KEY_BYTES = 1 << 16
MAX_STRING_BYTES = 1 << 26  # a chat template or a long token; every string must also fit in the file
MAX_ARRAY_ITEMS = 1 << 24  # vocabularies reach ~256k entries
MAX_DIMS = 4
MAX_TENSOR_NAME_BYTES = 256
TRIAL_TOKENS = 4
ALIGNMENT = (
    32  # GGUF's default tensor data alignment (a file may set a larger one: then this bound is looser)
)
# Each GGUF value type's size in bytes (strings and arrays are walked).
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
STRING, ARRAY = 8, 9


class HeaderWalk:
    def __init__(self, handle, size: int):
        self.handle, self.size = handle, size

    def take(self, count: int) -> bytes:
        if count < 0 or self.handle.tell() + count > self.size:
            raise Rejected("The GGUF file is truncated: its header runs past the end of the file.")
        return self.handle.read(count)

    def number(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def skip(self, count: int) -> None:
        if count < 0 or self.handle.tell() + count > self.size:
            raise Rejected("The GGUF file is truncated: its header runs past the end of the file.")
        self.handle.seek(count, os.SEEK_CUR)

    def string(self, limit: int, what: str) -> bytes:
        length = self.number("Q")
        if length > limit:
            raise Rejected(f"The GGUF file's {what} is {length} bytes long; at most {limit} are allowed.")
        return self.take(length)

    def value(self, kind: int, key: str, *, in_array: bool = False) -> None:
        if kind in SCALAR_SIZES:
            self.skip(SCALAR_SIZES[kind])
        elif kind == STRING:
            length = self.number("Q")
            if length > MAX_STRING_BYTES:
                raise Rejected(f"The GGUF value {key!r} is a string of {length} bytes: refused as absurd.")
            self.skip(length)
        elif kind == ARRAY and not in_array:
            item_kind, count = self.number("I"), self.number("Q")
            if count > MAX_ARRAY_ITEMS:
                raise Rejected(f"The GGUF value {key!r} is an array of {count} items: refused as absurd.")
            if item_kind in SCALAR_SIZES:
                self.skip(SCALAR_SIZES[item_kind] * count)
            elif item_kind == STRING:
                for _ in range(count):
                    self.value(STRING, key, in_array=True)
            else:
                raise Rejected(f"The GGUF value {key!r} is an array of an unsupported type ({item_kind}).")
        else:
            raise Rejected(f"The GGUF value {key!r} has an unknown type ({kind}).")


def walk_header(path: str) -> None:
    """Refuse a file whose header is truncated, inconsistent or absurd, before any parser allocates for it."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        walk = HeaderWalk(handle, size)
        if walk.take(4) != MAGIC:
            raise Rejected("The file is not GGUF (its first bytes are not 'GGUF').")
        version = walk.number("I")
        if version not in VERSIONS:
            raise Rejected(f"GGUF version {version} is not supported (versions 2 and 3 are).")
        tensors, keys = walk.number("Q"), walk.number("Q")
        if not 0 < tensors <= MAX_TENSORS:
            raise Rejected(f"The GGUF file declares {tensors} tensors; 1 to {MAX_TENSORS} are allowed.")
        if keys > MAX_KEYS:
            raise Rejected(f"The GGUF file declares {keys} metadata keys; at most {MAX_KEYS} are allowed.")
        for _ in range(keys):
            key = walk.string(MAX_KEY_BYTES, "metadata key").decode("utf-8", "replace")
            walk.value(walk.number("I"), key)
        extents = []
        for _ in range(tensors):
            name = walk.string(MAX_TENSOR_NAME_BYTES, "tensor name").decode("utf-8", "replace")
            dims = walk.number("I")
            if not 0 < dims <= MAX_DIMS:
                raise Rejected(
                    f"The GGUF tensor {name!r} has {dims} dimensions; 1 to {MAX_DIMS} are allowed."
                )
            elements = 1
            for _ in range(dims):
                extent = walk.number("Q")
                elements *= extent
                if not 0 < extent or elements > size * 8:  # at most 8 elements per byte (sub-byte types)
                    raise Rejected(f"The GGUF tensor {name!r} is larger than the file could hold.")
            extents.append((name, elements, walk.number("I"), walk.number("Q")))
        tensors_within_file(extents, data_start=-(-handle.tell() // ALIGNMENT) * ALIGNMENT, size=size)


def tensors_within_file(extents: list[tuple], *, data_start: int, size: int) -> None:
    import gguf

    for name, elements, kind, offset in extents:
        try:
            block, block_bytes = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(kind)]
        except (ValueError, KeyError):
            raise Rejected(f"The GGUF tensor {name!r} has an unknown type ({kind}).") from None
        if data_start + offset + elements // block * block_bytes > size:
            raise Rejected(f"The GGUF file is truncated: the tensor {name!r} runs past its end.")


def model_summary(path: str) -> dict:
    """Read the values and tensors with the `gguf` package and check the tensors lie within the file."""
    import gguf

    size = os.path.getsize(path)
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, KeyError, IndexError, struct.error, OverflowError, NotImplementedError) as exc:
        raise Rejected(f"The GGUF file is inconsistent: {exc}") from None
    spans = []
    parameters = 0
    for tensor in reader.tensors:
        start, length = int(tensor.data_offset), int(tensor.n_bytes)
        if start < 0 or length < 0 or start + length > size:
            raise Rejected(f"The GGUF tensor {tensor.name!r} lies past the end of the file: it is truncated.")
        spans.append((start, start + length, tensor.name))
        parameters += int(tensor.n_elements)
    spans.sort()
    for (_, end, name), (start, _, other) in zip(spans, spans[1:], strict=False):
        if start < end:
            raise Rejected(f"The GGUF tensors {name!r} and {other!r} overlap: the file is inconsistent.")

    def field(name: str):
        found = reader.get_field(name)
        if found is None or not found.types:
            return None
        try:
            return found.contents()
        except (ValueError, IndexError, UnicodeDecodeError):
            raise Rejected(f"The GGUF value {name!r} cannot be read.") from None

    architecture = field("general.architecture")
    if not isinstance(architecture, str) or not architecture:
        raise Rejected("The GGUF file names no architecture (general.architecture).")
    context = field(f"{architecture}.context_length")
    return {
        "architecture": architecture[:64],
        "parameters": parameters,
        "quantization": quantization_of(field("general.file_type"), reader.tensors),
        "context_length": int(context) if isinstance(context, int) and context > 0 else None,
        "chat_template": isinstance(field("tokenizer.chat_template"), str),
    }


def quantization_of(file_type, tensors) -> str:
    import gguf

    if isinstance(file_type, int):
        try:
            return gguf.LlamaFileType(file_type).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    counts: dict[str, int] = {}
    for tensor in tensors:
        counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + int(tensor.n_elements)
    return max(counts, key=counts.get) if counts else "unknown"


def trial_generation(path: str, *, chat: bool, workdir: str) -> None:
    """Load the model in llama.cpp's engine and generate a few tokens (through its chat template if any)."""
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = path
    params.n_ctx = 256
    params.n_parallel = 1
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    params.warmup = False
    # The engine's HTTP listener: a Unix socket in the child's own folder (it has no network).
    params.hostnames = [os.path.join(workdir, "engine.sock")]
    try:
        server = xllamacpp.Server(params)
    except RuntimeError:
        raise Rejected("llama.cpp could not load this GGUF model.") from None
    try:
        if chat:
            answer = server.handle_chat_completions(
                {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": TRIAL_TOKENS}
            )
        else:
            answer = server.handle_completions({"prompt": "Hello", "max_tokens": TRIAL_TOKENS})
    except (ValueError, RuntimeError) as exc:
        raise Rejected(f"The trial generation failed: {exc}") from None
    if not isinstance(answer, dict) or "error" in answer:
        error = answer.get("error") if isinstance(answer, dict) else answer
        message = error.get("message") if isinstance(error, dict) else error
        raise Rejected(f"The trial generation failed: {message}")


def inspect_gguf(path: str, request: dict) -> dict:
    walk_header(path)
    llm = model_summary(path)
    if not request.get("scan_only"):
        trial_generation(path, chat=llm["chat_template"], workdir=os.environ.get("HOME") or os.getcwd())
    return {"format": "gguf", "signature": {"inputs": [], "outputs": [], "llm": llm}}
