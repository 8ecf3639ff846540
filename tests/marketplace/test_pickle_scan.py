"""The static scan of the pickles inside an uploaded archive reads them exactly as an unpickler would, and
looks at every entry: a global hidden behind stack tricks, or a pickle hidden among torch.export's weights,
is refused; real TorchScript and torch.export files pass."""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile

import pytest

from marketplace.models import Model
from marketplace.sandbox.archives import (
    MalformedPickle,
    Rejected,
    classify_archive,
    pickle_globals,
    scan_archive,
)
from tests.inference.builders import torch_export_model, torchscript_model

from .conftest import marker_pickle, torch_export_bytes, torchscript_bytes, upload_file


def text(value: str) -> bytes:
    encoded = value.encode()
    return b"\x8c" + bytes([len(encoded)]) + encoded  # SHORT_BINUNICODE


def popped_global_pickle(command: str) -> bytes:
    """`os.system(command)`, written so that a scan which ignores POP sees `torch.device` imported."""
    return (
        b"\x80\x04"
        + text("os")
        + text("system")
        + text("torch")
        + text("device")
        + b"00"  # POP POP: 'os' and 'system' are on top again
        + b"\x93"  # STACK_GLOBAL
        + text(command)
        + b"\x85R."  # TUPLE1 REDUCE STOP
    )


def replace_entries(archive: bytes, replace: dict[str, bytes], add: dict[str, bytes] | None = None) -> bytes:
    source = zipfile.ZipFile(io.BytesIO(archive))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            relative = info.filename.split("/", 1)[1]
            target.writestr(info.filename, replace.get(relative, source.read(info)))
        for relative, data in (add or {}).items():
            target.writestr(f"archive/{relative}", data)
    return out.getvalue()


def scan(archive: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        scan_archive(opened, kind=classify_archive(opened.namelist()), max_total=1 << 30)


def imports_of_a_real_unpickler(data: bytes) -> list[tuple[str, str]]:
    """What CPython's unpickler imports, each import answered by a harmless callable (nothing runs)."""
    seen = []

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            seen.append((module, name))
            return lambda *args: None

    Recording(io.BytesIO(data)).load()
    return seen


def test_it_reads_the_global_a_pop_uncovers():
    data = popped_global_pickle("true")
    assert imports_of_a_real_unpickler(data) == [("os", "system")]
    assert pickle_globals(data) == [("os", "system")]


@pytest.mark.parametrize(
    "stack_trick",
    [
        # MARK 'torch' 'device' POP_MARK: the marked decoys are dropped
        text("os") + text("system") + b"(" + text("torch") + text("device") + b"1",
        # 'system' memoized and popped, then read back with BINGET after the decoys are popped
        text("os") + text("system") + b"\x94" + b"0" + text("torch") + text("device") + b"00" + b"h\x00",
        # a decoy popped, 'system' pushed and duplicated, the copy popped
        text("os") + text("device") + b"0" + text("system") + b"2" + b"0",
        # a MARK popped by POP, as CPython's unpickler does when a MARK is on top
        text("os") + text("system") + b"(" + b"0",
    ],
    ids=["pop-mark", "memo", "dup", "pop-of-a-mark"],
)
def test_it_reads_marks_memo_and_dup_as_the_unpickler_does(stack_trick):
    data = b"\x80\x04" + stack_trick + b"\x93)R."
    assert pickle_globals(data) == imports_of_a_real_unpickler(data) == [("os", "system")]


def test_it_refuses_an_import_whose_name_a_call_computes():
    computed = (
        b"\x80\x04"
        + text("collections")
        + text("OrderedDict")
        + b"\x93)R"  # an allowed call's result as the module's name
        + text("system")
        + b"\x93."
    )
    with pytest.raises(Rejected, match="cannot be read exactly"):
        pickle_globals(computed)


def test_it_refuses_a_pickle_followed_by_another():
    # torch.load's legacy format reads several pickles in a row: the scan must not stop at the first.
    with pytest.raises(MalformedPickle, match="bytes follow its end"):
        pickle_globals(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + marker_pickle("/tmp/x", protocol=2))


def test_it_refuses_a_legacy_weights_file_in_a_torch_export_archive():
    archive = replace_entries(
        torch_export_bytes(), {}, add={"data/weights/model.pt": marker_pickle("/tmp/x")}
    )
    with pytest.raises(Rejected, match="data/weights/model.pt"):
        scan(archive)


def test_it_refuses_a_pickle_in_place_of_torch_export_weights():
    with pytest.raises(Rejected, match="weight_0.*holds a pickle"):
        scan(replace_entries(torch_export_bytes(), {"data/weights/weight_0": marker_pickle("/tmp/x")}))


def test_it_refuses_an_undeclared_pickle_among_torch_export_weights():
    archive = replace_entries(
        torch_export_bytes(), {}, add={"data/weights/weight_9": popped_global_pickle("id")}
    )
    with pytest.raises(Rejected, match="os.system"):
        scan(archive)


def test_it_refuses_compiled_native_code_in_a_torch_export_archive():
    archive = replace_entries(torch_export_bytes(), {}, add={"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(Rejected, match="native code"):
        scan(archive)


def test_tensor_bytes_that_only_begin_like_a_pickle_are_accepted():
    weights = b"\x80\x02" + b"\xff" * 46  # 48 bytes of float data, as weight_0 holds
    scan(replace_entries(torch_export_bytes(), {"data/weights/weight_0": weights}))
    scan(replace_entries(torchscript_bytes(), {"data/0": weights}))


@pytest.mark.parametrize(
    "build",
    [
        lambda: torchscript_bytes(traced=True),
        lambda: torchscript_bytes(traced=False),
        torch_export_bytes,
        torchscript_model,
        torch_export_model,
    ],
    ids=["traced", "scripted", "export", "scripted-two-inputs", "export-no-weights"],
)
def test_real_torchscript_and_torch_export_files_pass(build):
    scan(build())


@pytest.mark.django_db(transaction=True)
def test_the_upload_api_refuses_the_popped_global_with_415(api, celery_worker_process, tmp_path):
    marker = tmp_path / "pwned"
    content = replace_entries(torchscript_bytes(), {"data.pkl": popped_global_pickle(f"touch {marker}")})
    response = api.post(
        "/api/v1/models", {"name": "popped", "file": upload_file(content, "model.pt")}, format="multipart"
    )
    assert response.status_code == 415, response.content
    assert "os.system, which is not allowed" in response.json()["detail"]
    assert not os.path.exists(marker)
    assert not Model.objects.filter(name="popped").exists()


@pytest.mark.django_db(transaction=True)
def test_the_upload_api_refuses_a_pickle_in_torch_export_weights_with_415(
    api, celery_worker_process, tmp_path
):
    marker = tmp_path / "pwned"
    content = replace_entries(
        torch_export_bytes(), {}, add={"data/weights/model.pt": marker_pickle(str(marker), protocol=2)}
    )
    response = api.post(
        "/api/v1/models", {"name": "weights", "file": upload_file(content, "model.pt2")}, format="multipart"
    )
    assert response.status_code == 415, response.content
    assert "data/weights/model.pt" in response.json()["detail"]
    assert "system" in response.json()["detail"]
    assert not os.path.exists(marker)
    assert json.loads(json.dumps(response.json()))  # a JSON body, not a 500 page
