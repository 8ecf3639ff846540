"""Hostile models at prediction time, on the real worker and its confined runners.

A TorchScript or torch.export model is a program: `torch.from_file(path, shared=…)` reads a file, and with
`shared=True` maps it writable. These models pass any upload check (they are published here directly) and
act only when called. Whatever they ask for, a runner has no path to a stored model, a cached copy, a secret
or the project's code beyond its own, and what it can see it cannot write: every attempt fails with an
error, every file is unchanged, and the other tenant's model answers exactly as before.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from . import builders
from .conftest import post_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PROBE_SIGNATURE = {
    "inputs": [
        {"name": "path", "datatype": "INT64", "shape": [-1]},
        {"name": "mode", "datatype": "INT64", "shape": [1]},
    ],
    "outputs": [{"name": "head", "datatype": "FP32", "shape": [4]}],
}
READ, WRITE = 0, 1


@functools.cache
def path_probe_torchscript() -> bytes:
    """Reads the first 4 bytes of the file its input spells, or (mode 1) maps it shared and overwrites
    them."""
    import torch
    from torch import Tensor

    class PathProbe(torch.nn.Module):
        def forward(self, path: Tensor, mode: Tensor) -> Tensor:
            codes: list[int] = path.tolist()
            name = "".join([chr(c) for c in codes])
            if int(mode.item()) == 1:
                mapped = torch.from_file(name, shared=True, size=4, dtype=torch.uint8)
                mapped.fill_(88)
                return mapped.to(torch.float32)
            return torch.from_file(name, shared=False, size=4, dtype=torch.uint8).to(torch.float32)

    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(PathProbe()), buffer)
    return buffer.getvalue()


def file_reader_export(path: str, shared: bool) -> bytes:
    """A torch.export program whose graph opens `path` with aten.from_file when it runs (an attacker's build:
    a fake kernel lets the exporter trace the call)."""
    import torch

    register_from_file_fake()

    class Reader(torch.nn.Module):
        def forward(self, x):
            data = torch.ops.aten.from_file.default(path, shared, 4, dtype=torch.uint8)
            return data.to(torch.float32) + x

    buffer = io.BytesIO()
    torch.export.save(torch.export.export(Reader(), (torch.zeros(4),)), buffer)
    return buffer.getvalue()


@functools.cache
def register_from_file_fake() -> None:
    import torch

    @torch.library.register_fake("aten::from_file")
    def _(filename, shared=None, size=0, *, dtype=None, layout=None, device=None, pin_memory=None):
        return torch.empty(size, dtype=dtype)


def codes(path: Path) -> list[int]:
    return [ord(c) for c in str(path)]


def predict(client, slug: str, body: dict, key: str):
    # A runner starting for a new tenant takes a moment: wait for the answer rather than take a 202.
    response = post_json(client, f"/api/v1/models/{slug}/predict?wait=60", body, key)
    assert response.status_code < 500, response.content
    return response


def failed(response) -> str:
    """The error a failed call reports (its status, 200 with `failed` or a 4xx, is the model's fault)."""
    body = response.json()
    assert body.get("status") != "succeeded", body
    error = body.get("error") or body.get("detail") or ""
    assert error, body
    return error


@pytest.fixture
def victim(bob, bob_key, client, celery_worker_process):
    """Bob's private model, called once (so the worker holds a cached copy), and its answer."""
    name = f"private-{uuid.uuid4().hex[:6]}"
    version = builders.publish(owner=bob, name=name, data=builders.digits_onnx(seed=7), visibility="private")
    body = {"inputs": {"pixels": [[0.25] * 64]}}
    response = predict(client, f"bob/{name}", body, bob_key)
    assert response.status_code == 200 and response.json()["status"] == "succeeded", response.content
    stored = Path(settings.MEDIA_ROOT) / version.file.name
    cached = Path(settings.INFERENCE_MODEL_CACHE_DIR) / version.sha256
    assert stored.is_file() and cached.is_file()
    return {
        "slug": f"bob/{name}",
        "body": body,
        "outputs": response.json()["outputs"],
        "files": [stored, cached],
    }


@pytest.fixture
def host_files():
    """A world-readable file and a root-only one outside every model folder, and two files in the project's
    source tree: one beside the settings (invisible to runners), one in the runners' own code (visible,
    read-only)."""
    made = []

    def make(folder, mode: int, content: bytes, suffix=".txt") -> Path:
        fd, name = tempfile.mkstemp(dir=folder, prefix="hostile-target-", suffix=suffix)
        os.write(fd, content)
        os.close(fd)
        os.chmod(name, mode)
        made.append(Path(name))
        return Path(name)

    root = Path(settings.BASE_DIR)
    files = {
        # Not in /tmp: a runner has a /tmp of its own, where a shared mapping would make a new, private file.
        "world-readable": make("/var/tmp", 0o644, b"WORLD-READABLE-SECRET"),  # noqa: S108
        "root-only": make("/var/tmp", 0o600, b"ROOT-ONLY-SECRET"),  # noqa: S108
        "source": make(root / "portal", 0o644, b"# SOURCE-OF-THE-WEB\n", ".py"),
        "runner-code": make(root / "inference" / "runners", 0o644, b"# RUNNER-CODE\n", ".py"),
    }
    yield files
    for path in made:
        path.unlink(missing_ok=True)


def test_a_torchscript_model_cannot_read_or_write_any_file_of_the_host_or_another_tenant(
    client, alice, alice_key, bob_key, victim, host_files
):
    builders.publish(
        owner=alice,
        name="path-probe",
        data=path_probe_torchscript(),
        format="torchscript",
        signature=PROBE_SIGNATURE,
    )
    targets = {
        **host_files,
        "bob's stored model": victim["files"][0],
        "bob's cached copy": victim["files"][1],
    }
    before = {name: path.read_bytes() for name, path in targets.items()}

    for name, path in targets.items():
        for mode in (READ, WRITE):
            response = predict(
                client, "alice/path-probe", {"inputs": {"path": codes(path), "mode": [mode]}}, alice_key
            )
            if name == "runner-code" and mode == READ:
                # The runner's own code is part of its runtime: readable, and nothing else is.
                assert response.json()["status"] == "succeeded", response.content
                continue
            error = failed(response)
            if name == "runner-code":  # visible, but the runner's user may not write it, nor the mount
                assert "Permission denied" in error or "Read-only file system" in error, error
            else:
                assert "No such file or directory" in error, (name, mode, error)

    assert {name: path.read_bytes() for name, path in targets.items()} == before
    again = predict(client, victim["slug"], victim["body"], bob_key)
    assert again.status_code == 200 and again.json()["outputs"] == victim["outputs"], again.content


def test_the_other_tenant_still_gets_its_exact_answer_after_an_attack(
    client, alice, alice_key, bob_key, victim, host_files
):
    builders.publish(
        owner=alice,
        name="path-probe",
        data=path_probe_torchscript(),
        format="torchscript",
        signature=PROBE_SIGNATURE,
    )
    for path in victim["files"]:
        failed(
            predict(client, "alice/path-probe", {"inputs": {"path": codes(path), "mode": [WRITE]}}, alice_key)
        )
    response = predict(client, victim["slug"], victim["body"], bob_key)
    assert response.status_code == 200, response.content
    assert response.json()["outputs"] == victim["outputs"]


@pytest.mark.parametrize(
    ("target", "shared"),
    [("root-only", False), ("world-readable", False), ("bob's cached copy", True), ("source", True)],
)
def test_a_torch_export_program_cannot_open_files_outside_its_runner(
    client, alice, alice_key, victim, host_files, target, shared
):
    path = victim["files"][1] if target == "bob's cached copy" else host_files[target]
    before = path.read_bytes()
    name = f"reader-{uuid.uuid4().hex[:6]}"
    builders.publish(
        owner=alice,
        name=name,
        data=file_reader_export(str(path), shared),
        format="torch-export",
        signature={
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [4]}],
        },
    )
    error = failed(predict(client, f"alice/{name}", {"inputs": {"x": np.zeros(4).tolist()}}, alice_key))
    assert "No such file or directory" in error, error
    assert path.read_bytes() == before
