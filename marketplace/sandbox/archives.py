"""Static checks of an uploaded model file's bytes, before anything loads it: what kind of file it is, and for
zip archives their central directory (zip bombs) and every pickle inside, scanned opcode by opcode and never
unpickled. Standard library only: the web sniffs uploads with it, and the sandbox imports it as a sibling.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
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
# Entries a loader unpickles (or `torch.load`s: a `.pt` that is no zip is a pickle, or several).
PICKLE_SUFFIXES = (".pkl", ".debug_pkl", ".pt")
TORCH_EXPORT_PAYLOAD_FOLDERS = ("data/weights/", "data/constants/")
TORCH_EXPORT_NATIVE_CODE = "data/aotinductor/"

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


class MalformedPickle(Rejected):
    """Not a pickle an unpickler reads through: an unknown opcode, a stack underflow, an unknown memo slot,
    truncated bytes, or bytes after its STOP."""


_MARK = object()  # a MARK on the simulated stack; any other value is a `str` or `_UNKNOWN`
_UNKNOWN = object()  # a value the scan does not follow: a number, a container, what a call returned
FORBIDDEN_OPCODES = {
    # INST is protocol 0's import-and-call; the EXT codes import what the loading process's registry says.
    "INST": "The pickle uses the INST opcode, which is not allowed.",
    "EXT1": "The pickle uses the EXT1 opcode, which is not allowed.",
    "EXT2": "The pickle uses the EXT2 opcode, which is not allowed.",
    "EXT4": "The pickle uses the EXT4 opcode, which is not allowed.",
}
_PUSHES_ONE_VALUE = {
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "NONE", "NEWTRUE", "NEWFALSE", "FLOAT",
    "BINFLOAT", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "EMPTY_LIST", "EMPTY_DICT",
    "EMPTY_TUPLE", "EMPTY_SET", "PERSID", "NEXT_BUFFER", "EXT1", "EXT2", "EXT4",
}  # fmt: skip
# The other opcodes' stack effects, as CPython's unpickler applies them:
# (pops down to a MARK, values then popped, a value must stay under them, values pushed).
_STACK_EFFECTS = {
    **{name: (False, 0, False, 1) for name in _PUSHES_ONE_VALUE},
    "PROTO": (False, 0, False, 0),
    "FRAME": (False, 0, False, 0),
    "READONLY_BUFFER": (False, 0, True, 0),
    "POP_MARK": (True, 0, False, 0),
    "TUPLE": (True, 0, False, 1),
    "LIST": (True, 0, False, 1),
    "DICT": (True, 0, False, 1),
    "FROZENSET": (True, 0, False, 1),
    "OBJ": (True, 0, False, 1),
    "INST": (True, 0, False, 1),
    "APPENDS": (True, 0, True, 0),
    "SETITEMS": (True, 0, True, 0),
    "ADDITEMS": (True, 0, True, 0),
    "TUPLE1": (False, 1, False, 1),
    "TUPLE2": (False, 2, False, 1),
    "TUPLE3": (False, 3, False, 1),
    "APPEND": (False, 1, True, 0),
    "BUILD": (False, 1, True, 0),
    "SETITEM": (False, 2, True, 0),
    "BINPERSID": (False, 1, False, 1),
    "REDUCE": (False, 2, False, 1),
    "NEWOBJ": (False, 2, False, 1),
    "NEWOBJ_EX": (False, 3, False, 1),
}


def read_pickle(data: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """Run a pickle's opcodes on a model of the unpickler's stack and memo, without unpickling anything.

    Returns every (module, name) it would import and the reasons it must be refused (forbidden opcodes, an
    import whose target is not a string known exactly); raises MalformedPickle when no unpickler would read
    it through to its end.
    """
    imports: list[tuple[str, str]] = []
    problems: list[str] = []
    stack: list[object] = []
    memo: dict[int, object] = {}

    def pop_value() -> object:
        if not stack or stack[-1] is _MARK:
            raise MalformedPickle("A pickle inside the archive is malformed (its stack underflows).")
        return stack.pop()

    def pop_to_mark() -> list[object]:
        if _MARK not in stack:
            raise MalformedPickle("A pickle inside the archive is malformed (a MARK is missing).")
        at = len(stack) - 1 - stack[::-1].index(_MARK)
        items = stack[at + 1 :]
        del stack[at:]
        return items

    def top_value() -> object:
        if not stack or stack[-1] is _MARK:
            raise MalformedPickle("A pickle inside the archive is malformed (its stack underflows).")
        return stack[-1]

    end = None
    try:
        for opcode, arg, position in pickletools.genops(data):
            name = opcode.name
            if name in FORBIDDEN_OPCODES:
                problems.append(FORBIDDEN_OPCODES[name])
            if name in STRING_OPCODES:
                stack.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
            elif name == "MARK":
                stack.append(_MARK)
            elif name == "POP":  # pops a MARK too when one is on top, as CPython's unpickler does
                if not stack:
                    raise MalformedPickle("A pickle inside the archive is malformed (its stack underflows).")
                stack.pop()
            elif name == "DUP":
                stack.append(top_value())
            elif name in MEMO_PUT_OPCODES:
                if arg < 0:
                    raise MalformedPickle("A pickle inside the archive is malformed (a negative memo slot).")
                memo[arg] = top_value()
            elif name == "MEMOIZE":
                memo[len(memo)] = top_value()
            elif name in MEMO_GET_OPCODES:
                if arg not in memo:
                    raise MalformedPickle("A pickle inside the archive is malformed (an unknown memo slot).")
                stack.append(memo[arg])
            elif name == "GLOBAL":
                module, separator, attr = str(arg).partition(" ")
                if " " in attr or not separator:
                    problems.append("The pickle imports a name that cannot be read exactly.")
                imports.append((module, attr))
                stack.append(_UNKNOWN)
            elif name == "STACK_GLOBAL":
                attr, module = pop_value(), pop_value()
                if isinstance(module, str) and isinstance(attr, str):
                    imports.append((module, attr))
                else:
                    problems.append("The pickle imports a name that cannot be read exactly.")
                stack.append(_UNKNOWN)
            elif name == "STOP":
                pop_value()
                end = position + 1
            elif name in _STACK_EFFECTS:
                to_mark, popped, keeps_top, pushed = _STACK_EFFECTS[name]
                if to_mark:
                    items = pop_to_mark()
                    if name in {"DICT", "SETITEMS"} and len(items) % 2:
                        raise MalformedPickle("A pickle inside the archive is malformed (an odd DICT).")
                    if name == "OBJ" and not items:
                        raise MalformedPickle("A pickle inside the archive is malformed (an empty OBJ).")
                for _ in range(popped):
                    pop_value()
                if keeps_top:
                    top_value()
                stack.extend([_UNKNOWN] * pushed)
            else:
                raise MalformedPickle(f"The pickle uses the {name} opcode, which is not allowed.")
    except MalformedPickle:
        raise
    except Exception as exc:  # pickletools' own errors: unknown opcodes, truncated arguments, no STOP
        raise MalformedPickle(f"A pickle inside the archive is malformed ({exc}).") from exc
    if end != len(data):
        raise MalformedPickle("A pickle inside the archive is malformed (bytes follow its end).")
    return imports, problems


def pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle would import, read exactly; refuses what cannot be read exactly."""
    imports, problems = read_pickle(data)
    if problems:
        raise Rejected(problems[0])
    return imports


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
    """Every entry is looked at: archives inside are scanned in turn, pickles are read exactly, and only what
    the loader reads as raw tensor bytes may be something else."""
    entries = check_zip(archive, max_total=max_total)
    raw_tensors = raw_tensor_entries(archive, entries, kind=kind)
    for info in entries:
        relative = info.filename.split("/", 1)[-1]
        where = f"The archive entry {info.filename!r}"
        if kind == "torch-export" and relative.startswith(TORCH_EXPORT_NATIVE_CODE):
            raise Rejected(f"{where} is compiled native code (AOTInductor), which is not allowed.")
        if info.file_size == 0:
            continue
        with archive.open(info) as handle:
            head = handle.read(4)
        if head.startswith(b"PK\x03\x04"):
            if depth >= 1:
                raise Rejected(f"{where} nests archives too deeply.")
            nested = zipfile.ZipFile(io.BytesIO(read_entry(archive, info)))
            scan_archive(nested, kind="nested", max_total=max_total, depth=depth + 1)
        elif info.filename in raw_tensors:
            refuse_a_pickle_among_tensors(archive, info, head=head)
        elif relative.endswith(PICKLE_SUFFIXES) or head[:1] == b"\x80":
            scan_pickle(read_entry(archive, info), where=where, torchscript=kind == "torchscript")
        elif kind == "torch-export" and relative.endswith(".json"):
            refuse_pickled_weights(read_entry(archive, info), where=info.filename, archive=archive)


def raw_tensor_entries(archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], *, kind: str) -> set[str]:
    """The entries the loader reads as plain tensor bytes, never unpickled: a TorchScript or `torch.save`
    archive's storages (`data/0`, `constants/3`), and the payloads a `torch.export` config declares so."""
    if kind != "torch-export":
        return {
            info.filename
            for info in entries
            if re.fullmatch(r"(data|constants)/\d+", info.filename.split("/", 1)[-1])
        }
    declared = set()
    for info in entries:
        relative = info.filename.split("/", 1)[-1]
        if not (relative.startswith(TORCH_EXPORT_PAYLOAD_FOLDERS) and relative.endswith("_config.json")):
            continue
        folder = info.filename.rsplit("/", 1)[0]
        for item in payload_configs(read_entry(archive, info)):
            if not item.get("use_pickle") and isinstance(item.get("path_name"), str):
                declared.add(f"{folder}/{item['path_name']}")
    return declared


def refuse_a_pickle_among_tensors(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, head: bytes) -> None:
    # Tensor bytes may begin like a pickle by chance; only bytes that read through as a whole pickle are one.
    if sniff(head) != "pickle" or info.file_size > PICKLE_MAX_BYTES:
        return
    try:
        read_pickle(archive.read(info))
    except MalformedPickle:
        return
    raise Rejected(f"The archive entry {info.filename!r} holds a pickle where tensor data belongs.")


def payload_configs(config: bytes) -> list[dict]:
    try:
        document = json.loads(config)
    except ValueError:
        return []
    entries = document.get("config", {}) if isinstance(document, dict) else {}
    if not isinstance(entries, dict):
        return []
    return [item for item in entries.values() if isinstance(item, dict)]


def refuse_pickled_weights(config: bytes, *, where: str, archive: zipfile.ZipFile) -> None:
    for item in payload_configs(config):
        if item.get("use_pickle"):
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
