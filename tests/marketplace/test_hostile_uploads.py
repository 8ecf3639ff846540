"""Hostile files built here are refused with 415 (or 413) and a reason: no 500, no code run,
the worker goes on."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from django.conf import settings

from marketplace.models import Model

from . import conftest as build
from .conftest import onnx_model_bytes, upload_file

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    return str(tmp_path_factory.mktemp("hostile") / "pwned")


CORPUS = {
    "a pickle with a payload, named .pt": (lambda m: build.marker_pickle(m), "model.pt", "pickle"),
    "a plain pickle": (lambda m: build.marker_pickle(m), "model.pkl", "pickle"),
    "a pickle named .onnx": (lambda m: build.marker_pickle(m), "model.onnx", "pickle"),
    "a protocol-0 pickle named .onnx": (lambda m: build.marker_pickle(m, protocol=0), "model.onnx", "pickle"),
    "torch.save of a whole module": (lambda m: build.torch_save_of_module(), "model.pt", "torch.save"),
    "a TorchScript archive whose data.pkl carries a payload": (
        lambda m: build.torchscript_with_payload(m),
        "model.pt",
        "posix.system",
    ),
    "ONNX with external data outside the folder": (
        lambda m: build.onnx_with_external_data("../../etc/hostname"),
        "model.onnx",
        "external data",
    ),
    "ONNX with external data at an absolute path": (
        lambda m: build.onnx_with_external_data("/etc/hostname"),
        "model.onnx",
        "external data",
    ),
    "ONNX whose ConstantOfShape needs terabytes": (
        lambda m: build.onnx_constant_of_shape_terabytes(),
        "model.onnx",
        "memory",
    ),
    "ONNX with an initializer claiming 2^62 elements": (
        lambda m: build.onnx_huge_initializer(),
        "model.onnx",
        "elements",
    ),
    "ONNX with an unknown operator domain": (
        lambda m: build.onnx_unknown_domain(),
        "model.onnx",
        "evil.example",
    ),
    "random bytes": (lambda m: os.urandom(4096), "model.onnx", ""),
    "a truncated ONNX model": (
        lambda m: onnx_model_bytes()[: len(onnx_model_bytes()) // 2],
        "model.onnx",
        "",
    ),
    "an empty file": (lambda m: b"", "model.onnx", "empty"),
    "a zip bomb shaped like a torch archive": (
        lambda m: build.zip_bomb_like_a_torch_archive(),
        "model.pt",
        "bomb",
    ),
}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", list(CORPUS))
def test_it_rejects_a_hostile_file(case, api, marker, celery_worker_process):
    make, filename, phrase = CORPUS[case]
    content = make(marker)
    sha = hashlib.sha256(content).hexdigest()
    # Other tests may have stored the same bytes (and keep them): what this upload adds is what counts.
    before = set(stored_copies(sha))
    response = api.post(
        "/api/v1/models", {"name": "hostile", "file": upload_file(content, filename)}, format="multipart"
    )
    assert response.status_code == 415, response.content
    reason = response.json()["detail"]
    assert reason
    assert phrase.lower() in reason.lower()
    assert not os.path.exists(marker)
    assert not Model.objects.filter(name="hostile").exists()
    # Nothing half-written: no stored copy of the file is left behind, under any name.
    assert set(stored_copies(sha)) - before == set()


def stored_copies(sha: str) -> list[Path]:
    return [p for p in Path(settings.MEDIA_ROOT).rglob("*") if p.is_file() and file_sha256(p) == sha]


def test_pickles_are_refused_with_how_to_export(api):
    response = api.post(
        "/api/v1/models",
        {"name": "p", "file": upload_file(build.marker_pickle("/tmp/x"), "m.pt")},
        format="multipart",
    )
    assert response.status_code == 415
    assert "torch.jit.save" in response.json()["detail"]
    assert "torch.export.save" in response.json()["detail"]


def test_a_whole_module_saved_with_torch_save_is_refused_with_how_to_export(api, celery_worker_process):
    response = api.post(
        "/api/v1/models",
        {"name": "p", "file": upload_file(build.torch_save_of_module(), "m.pt")},
        format="multipart",
    )
    assert response.status_code == 415
    assert "torch.jit.save" in response.json()["detail"]


def test_the_hostile_file_over_the_limit_gets_413(api, settings, marker):
    settings.MODEL_UPLOAD_MAX_BYTES = 1024
    response = api.post(
        "/api/v1/models",
        {"name": "hostile", "file": upload_file(build.zip_bomb_like_a_torch_archive(), "m.pt")},
        format="multipart",
    )
    assert response.status_code == 413


def test_the_worker_still_serves_uploads_after_the_corpus(api, marker, celery_worker_process):
    response = api.post(
        "/api/v1/models", {"name": "after", "file": upload_file(onnx_model_bytes(1.0))}, format="multipart"
    )
    assert response.status_code == 201, response.content
    assert response.json()["versions"][0]["status"] == "ready"
    assert not os.path.exists(marker)
