"""Static checks of an uploaded model file's bytes, before anything loads it: what kind of file it is, and for
zip archives their central directory (zip bombs) and every pickle inside, scanned opcode by opcode and never
unpickled. Standard library only: the web sniffs uploads with it, and the sandbox imports it as a sibling.
"""

from __future__ import annotations

import io
import json
import pickletools
import zipfile

EXPORT_HOW_TO = (
    "Export the model instead: TorchScript (`torch.jit.save(torch.jit.script(model), 'model.pt')` or "
    "`torch.jit.save(torch.jit.trace(model, example), 'model.pt')`), torch.export "
    "(`torch.export.save(torch.export.export(model, example_args), 'model.pt2')`), or ONNX."
)

# Zip archives: a torch archive is mostly stored (not deflated) tensor data, so a high ratio means a bomb.
ZIP_MAX_ENTRIES = 20_000
ZIP_MAX_RATIO = 100
ZIP_RATIO_MIN_SIZE = 1 << 20
PICKLE_MAX_BYTES = 256 << 20

TENSOR_REBUILD_GLOBALS = {
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("collections", "OrderedDict"),
    ("torch", "device"),
}
STORAGE_TYPES = {
    f"{kind}Storage"
    for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
}
TORCHSCRIPT_PICKLE_HELPERS = {
    "restore_type_tag",
    "build_intlist",
    "build_tensorlist",
    "build_doublelist",
    "build_boollist",
    "build_tensor_from_id",
}
STRING_OPCODES = {
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "UNICODE",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}
MEMO_GET_OPCODES = {"GET", "BINGET", "LONG_BINGET"}
MEMO_PUT_OPCODES = {"PUT", "BINPUT", "LONG_BINPUT"}
FORBIDDEN_OPCODES = {"INST", "EXT1", "EXT2", "EXT4"}


class Rejected(Exception):
    """The file is not a supported, safe, working model; the message says why (shown to the uploader)."""


# --- Sniffing -----------------------------------------------------------------------------------------------


def sniff(head: bytes) -> str:
    """`pickle`, `zip`, `gguf`, `protobuf` or `unknown`, from the first bytes (also used by the web)."""
    if not head:
        return "empty"
    if head[0] == 0x80 and len(head) > 1 and 1 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"GGUF"):
        return "gguf"
    # An ONNX ModelProto starts with a field key: ir_version (1, varint) or a length-delimited field.
    key = head[0]
    field, wire = key >> 3, key & 7
    if (
        (field == 1 and wire == 0)
        or (field == 5 and wire == 0)
        or (field in {2, 3, 4, 6, 7, 8, 14} and wire == 2)
    ):
        return "protobuf"
    if head[:1] in (b"(", b"c", b"]", b"}") and b"\n" in head[:200]:
        return "pickle"
    return "unknown"


# --- Zip archives and pickles -------------------------------------------------------------------------------


def check_zip(archive: zipfile.ZipFile, *, max_total: int) -> list[zipfile.ZipInfo]:
    entries = archive.infolist()
    if len(entries) > ZIP_MAX_ENTRIES:
        raise Rejected(f"The archive has {len(entries)} entries; at most {ZIP_MAX_ENTRIES} are allowed.")
    total = 0
    for info in entries:
        total += info.file_size
        if info.file_size > ZIP_RATIO_MIN_SIZE and info.file_size > ZIP_MAX_RATIO * max(
            info.compress_size, 1
        ):
            raise Rejected(
                f"The archive entry {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}"
                " times: refused as a zip bomb."
            )
        if info.filename.startswith("/") or ".." in info.filename.split("/"):
            raise Rejected(f"The archive entry {info.filename!r} has an unsafe path.")
    if total > max_total:
        raise Rejected(f"The archive would expand to {total} bytes, more than the {max_total} allowed.")
    return entries


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle would import, read statically; refuses what cannot be read."""
    found: list[tuple[str, str]] = []
    recent: list[object] = []  # values pushed, as far as they matter here (strings), None for the rest
    memo: dict[int, object] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name in FORBIDDEN_OPCODES:
                raise Rejected(f"The pickle uses the {name} opcode, which is not allowed.")
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
                recent.append(None)
            elif name == "STACK_GLOBAL":
                if len(recent) < 2 or not isinstance(recent[-1], str) or not isinstance(recent[-2], str):
                    raise Rejected("The pickle imports a name that cannot be read statically.")
                found.append((recent[-2], recent[-1]))
                recent[-2:] = [None]
            elif name in STRING_OPCODES:
                recent.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
            elif name in MEMO_GET_OPCODES:
                recent.append(memo.get(arg))
            elif name in MEMO_PUT_OPCODES:
                memo[arg] = recent[-1] if recent else None
            elif name == "MEMOIZE":
                memo[len(memo)] = recent[-1] if recent else None
            elif opcode.stack_after:
                recent.append(None)
    except Rejected:
        raise
    except Exception as exc:
        raise Rejected(f"A pickle inside the archive is malformed ({exc}).") from exc
    return found


def allowed_global(module: str, name: str, *, torchscript: bool) -> bool:
    if (module, name) in TENSOR_REBUILD_GLOBALS:
        return True
    if module == "torch" and name in STORAGE_TYPES:
        return True
    if torchscript and module == "torch.jit._pickle" and name in TORCHSCRIPT_PICKLE_HELPERS:
        return True
    return torchscript and (module == "__torch__" or module.startswith("__torch__."))


def scan_pickle(data: bytes, *, where: str, torchscript: bool) -> None:
    for module, name in pickle_globals(data):
        if not allowed_global(module, name, torchscript=torchscript):
            raise Rejected(
                f"{where} imports {module}.{name}, which is not allowed: the file could run code when "
                f"loaded. {EXPORT_HOW_TO}"
            )


def classify_archive(names: list[str]) -> str:
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1:
        raise Rejected("The zip archive is not a PyTorch archive (entries under several top-level folders).")
    relative = {n.split("/", 1)[1] for n in names if "/" in n}
    if "archive_format" in relative and any(r.startswith("models/") for r in relative):
        return "torch-export"
    if (
        "data.pkl" in relative
        and "constants.pkl" in relative
        and any(r.startswith("code/") for r in relative)
    ):
        return "torchscript"
    if "data.pkl" in relative:
        raise Rejected(
            "This is a `torch.save` file (a pickled Python object), which is never loaded here. "
            + EXPORT_HOW_TO
        )
    raise Rejected("The zip archive is not a TorchScript or torch.export archive. " + EXPORT_HOW_TO)


def scan_archive(archive: zipfile.ZipFile, *, kind: str, max_total: int, depth: int = 0) -> None:
    entries = check_zip(archive, max_total=max_total)
    for info in entries:
        relative = info.filename.split("/", 1)[-1]
        if info.file_size == 0:
            continue
        is_pickle_name = relative.endswith(".pkl")
        if kind == "torchscript" and not is_pickle_name:
            continue  # tensor storages and TorchScript source: data, never unpickled
        with archive.open(info) as handle:
            head = handle.read(4)
        if head.startswith(b"PK\x03\x04"):
            if depth >= 1:
                raise Rejected(f"The archive entry {info.filename!r} nests archives too deeply.")
            nested = zipfile.ZipFile(io.BytesIO(read_entry(archive, info)))
            scan_archive(nested, kind="nested", max_total=max_total, depth=depth + 1)
        elif is_pickle_name or (
            kind == "torch-export" and "/weights/" not in f"/{relative}" and head[:1] == b"\x80"
        ):
            scan_pickle(
                read_entry(archive, info),
                where=f"The archive entry {info.filename!r}",
                torchscript=kind == "torchscript",
            )
        elif kind == "torch-export" and relative.endswith(".json"):
            refuse_pickled_weights(read_entry(archive, info), where=info.filename, archive=archive)


def refuse_pickled_weights(config: bytes, *, where: str, archive: zipfile.ZipFile) -> None:
    try:
        document = json.loads(config)
    except ValueError:
        return
    entries = document.get("config", {}) if isinstance(document, dict) else {}
    if not isinstance(entries, dict):
        return
    for item in entries.values():
        if isinstance(item, dict) and item.get("use_pickle"):
            raise Rejected(f"{where} stores pickled weights, which are not allowed; export plain tensors.")


def read_entry(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > PICKLE_MAX_BYTES:
        raise Rejected(f"The archive entry {info.filename!r} is too large to scan.")
    return archive.read(info)


def refusal(kind: str) -> str | None:
    """Why a file of this `sniff` kind is refused at once, or None when it must be inspected further."""
    if kind == "empty":
        return "The file is empty."
    if kind == "pickle":
        return "This is a Python pickle, which is never loaded here (it can run any code). " + EXPORT_HOW_TO
    if kind == "unknown":
        return "The file is not an ONNX model, a TorchScript or torch.export archive, or a GGUF model."
    return None
