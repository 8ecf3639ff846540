"""MODEL_ENCRYPTION_KEY: model files and tokenizers stored sealed, read back exactly, refused when altered;
key rotation, sealing files stored before the key, and the start-up check (in process; the live servers are
in test_e2e_encryption.py)."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import time
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from marketplace import encryption, files, keyring, services
from marketplace.encryption import CHUNK_SIZE, TAG_SIZE
from marketplace.models import ModelVersion
from tests.inference.text_builders import wordpiece_tokenizer_json

from .conftest import onnx_model_bytes, upload_file

pytestmark = pytest.mark.django_db


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def shares_a_run(plain: bytes, stored: bytes, run: int = 64) -> bool:
    """Whether `stored` holds any `run`-byte stretch of `plain`. Every such stretch contains a whole aligned
    block of run/2 bytes of `plain`, so looking for those blocks at every offset of `stored` is enough."""
    half = run // 2
    blocks = {plain[k : k + half] for k in range(0, len(plain) - half + 1, half)}
    return any(stored[i : i + half] in blocks for i in range(len(stored) - half + 1))


@pytest.fixture
def storage_dirs(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"
    settings.INFERENCE_DECRYPTED_MODEL_DIR = tmp_path / "decrypted"
    return tmp_path


@pytest.fixture
def master_key(settings, storage_dirs):
    settings.MODEL_ENCRYPTION_KEY = new_key()
    settings.MODEL_ENCRYPTION_KEY_OLD = ""
    return settings.MODEL_ENCRYPTION_KEY


def stored_bytes(name: str) -> bytes:
    return files.storage().open(name, "rb").read()


def store(content: bytes) -> files.StoredFile:
    stored, _head = files.store_stream(upload_file(content), limit=1 << 40)
    return stored


def rewrite(name: str, content: bytes) -> None:
    Path(files.storage().path(name)).write_bytes(content)


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 7],
    ids=lambda size: f"{size}B",
)
def test_a_file_is_stored_sealed_and_read_back_exactly(master_key, size):
    content = os.urandom(size)
    stored = store(content)
    assert stored.key.startswith(f"1.{encryption.MasterKey.from_text(master_key).id}.")
    assert stored.sha256 == hashlib.sha256(content).hexdigest() and stored.size == size
    sealed = stored_bytes(stored.name)
    assert len(sealed) == encryption.encrypted_size(size)
    assert not shares_a_run(content, sealed)
    assert files.read_bytes(stored.name, key=stored.key) == content


def test_without_the_key_files_are_stored_as_uploaded(settings, storage_dirs):
    settings.MODEL_ENCRYPTION_KEY = ""
    content = onnx_model_bytes()
    stored = store(content)
    assert stored.key == ""
    assert stored_bytes(stored.name) == content


def cut_out(sealed: bytes, chunk: int) -> bytes:
    step = CHUNK_SIZE + TAG_SIZE
    return sealed[: chunk * step] + sealed[(chunk + 1) * step :]


@pytest.mark.parametrize(
    "alter",
    [
        pytest.param(
            lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], id="a bit flipped in the first chunk"
        ),
        pytest.param(
            lambda b: b[: CHUNK_SIZE + 200] + bytes([b[CHUNK_SIZE + 200] ^ 1]) + b[CHUNK_SIZE + 201 :],
            id="a bit flipped in the second chunk",
        ),
        pytest.param(lambda b: b[:-1], id="its last byte cut off"),
        pytest.param(lambda b: b[: 2 * (CHUNK_SIZE + TAG_SIZE)], id="its last chunk cut off"),
        pytest.param(lambda b: cut_out(b, 1), id="a middle chunk dropped"),
        pytest.param(lambda b: b + b[-200:], id="bytes appended"),
        pytest.param(
            lambda b: (
                b[CHUNK_SIZE + TAG_SIZE : 2 * (CHUNK_SIZE + TAG_SIZE)]
                + b[: CHUNK_SIZE + TAG_SIZE]
                + b[2 * (CHUNK_SIZE + TAG_SIZE) :]
            ),
            id="two chunks swapped",
        ),
    ],
)
def test_an_altered_file_is_refused_and_never_cached(master_key, storage_dirs, alter):
    content = os.urandom(2 * CHUNK_SIZE + 500)
    stored = store(content)
    rewrite(stored.name, alter(stored_bytes(stored.name)))
    with pytest.raises(files.FileMismatch):
        files.read_bytes(stored.name, key=stored.key)
    with pytest.raises(files.FileMismatch):
        files.local_copy(name=stored.name, sha256=stored.sha256, key=stored.key)
    assert list((storage_dirs / "decrypted").iterdir()) == []
    assert not (storage_dirs / "cache").exists() or list((storage_dirs / "cache").iterdir()) == []


def test_decrypted_copies_are_never_kept_in_a_folder_that_is_not_this_users(settings, master_key, tmp_path):
    stored = store(b"some model bytes" * 100)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    settings.INFERENCE_DECRYPTED_MODEL_DIR = tmp_path / "planted-link"
    settings.INFERENCE_DECRYPTED_MODEL_DIR.symlink_to(elsewhere)
    with pytest.raises(files.FileUnavailable, match="not a folder of this user's"):
        files.local_copy(name=stored.name, sha256=stored.sha256, key=stored.key)
    assert list(elsewhere.iterdir()) == []


def test_decrypted_copies_past_the_budget_go_least_recently_used_first(settings, master_key, storage_dirs):
    settings.INFERENCE_DECRYPTED_MODEL_MAX_MB = 2
    megabyte = [store(os.urandom(1 << 20)) for _ in range(3)]
    copies = [files.local_copy(name=f.name, sha256=f.sha256, key=f.key) for f in megabyte[:2]]
    an_hour_ago = time.time() - 3600
    os.utime(copies[0], (an_hour_ago, an_hour_ago))
    os.utime(copies[1], (an_hour_ago + 60, an_hour_ago + 60))
    files.local_copy(name=megabyte[0].name, sha256=megabyte[0].sha256, key=megabyte[0].key)  # used again

    third = files.local_copy(name=megabyte[2].name, sha256=megabyte[2].sha256, key=megabyte[2].key)

    assert copies[0].exists() and third.exists()
    assert not copies[1].exists()  # the least recently used
    again = files.local_copy(name=megabyte[1].name, sha256=megabyte[1].sha256, key=megabyte[1].key)
    assert again.read_bytes() == files.read_bytes(megabyte[1].name, key=megabyte[1].key)  # decrypted anew


def test_a_copy_used_in_the_last_minute_stays_whatever_the_budget(settings, master_key, storage_dirs):
    settings.INFERENCE_DECRYPTED_MODEL_MAX_MB = 1
    megabyte = [store(os.urandom(1 << 20)) for _ in range(2)]
    copies = [files.local_copy(name=f.name, sha256=f.sha256, key=f.key) for f in megabyte]
    assert all(copy.exists() for copy in copies)


def test_the_default_folder_for_decrypted_copies_is_in_memory():
    from django.conf import settings

    assert settings.INFERENCE_DECRYPTED_MODEL_DIR == Path(f"/dev/shm/modelport-{os.getuid()}-models")


def test_a_file_under_another_master_key_is_unavailable_here(settings, master_key):
    stored = store(b"some model bytes" * 100)
    settings.MODEL_ENCRYPTION_KEY = new_key()
    with pytest.raises(files.FileUnavailable, match="not configured here"):
        files.read_bytes(stored.name, key=stored.key)


def test_a_version_is_validated_from_its_sealed_file_and_downloaded_as_uploaded(
    master_key, storage_dirs, alice, api
):
    content = onnx_model_bytes(bias=0.5)
    stored = services.store_upload(file=upload_file(content), limit=1 << 30)
    version = services.model_create(owner=alice, name="sealed", stored=stored)
    assert version.file_key == stored.key != ""
    version = services.validate_version(version_id=version.pk)
    assert version.status == "ready", version.reason
    # Decrypted for the sandbox into the private folder (in memory by default), not the model cache on disk.
    decrypted = storage_dirs / "decrypted"
    assert (decrypted / version.sha256).read_bytes() == content
    # The worker's, read-only; readable by the runners' group, which is handed it by descriptor or bind mount.
    copy = (decrypted / version.sha256).stat()
    assert stat.S_IMODE(copy.st_mode) == 0o440 and copy.st_uid == os.geteuid()
    assert stat.S_IMODE(decrypted.stat().st_mode) == 0o700
    assert not (storage_dirs / "cache").exists() or list((storage_dirs / "cache").iterdir()) == []

    response = api.get("/api/v1/models/alice/sealed/versions/1/file")
    assert response.status_code == 200
    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == response["X-Content-SHA256"] == version.sha256
    assert int(response["Content-Length"]) == len(content)


@pytest.mark.parametrize(
    "alter", [lambda b: b[:-TAG_SIZE], lambda b: bytes([b[0] ^ 1]) + b[1:]], ids=["cut short", "altered"]
)
def test_the_download_of_an_altered_file_is_refused(master_key, publish, api, alter):
    model = publish("sealed")
    version = model.versions.get()
    rewrite(version.file.name, alter(stored_bytes(version.file.name)))
    response = api.get("/api/v1/models/alice/sealed/versions/1/file")
    assert response.status_code == 503
    assert "integrity check" in response.json()["detail"]


def test_the_same_content_shares_one_sealed_file_and_its_key(master_key, publish):
    first = publish("one").versions.get()
    second = publish("two").versions.get()
    assert (second.file.name, second.file_key) == (first.file.name, first.file_key)
    assert files.read_bytes(second.file.name, key=second.file_key) == onnx_model_bytes()


def test_a_sealed_upload_never_shares_a_file_stored_in_the_clear(settings, storage_dirs, publish):
    settings.MODEL_ENCRYPTION_KEY = ""
    clear = publish("clear").versions.get()
    settings.MODEL_ENCRYPTION_KEY = new_key()
    sealed = publish("sealed").versions.get()
    assert sealed.file.name != clear.file.name and sealed.file_key and not clear.file_key
    assert not shares_a_run(onnx_model_bytes(), stored_bytes(sealed.file.name))


def text_version(owner, name: str) -> ModelVersion:
    tokenizer = services.store_tokenizer(file=upload_file(wordpiece_tokenizer_json().encode(), "t.json"))
    stored = services.store_upload(file=upload_file(onnx_model_bytes(bias=3.0)), limit=1 << 30)
    return services.model_create(owner=owner, name=name, stored=stored, tokenizer=tokenizer)


def readable(version: ModelVersion) -> bool:
    version.refresh_from_db()
    assert files.read_bytes(version.file.name, key=version.file_key) == onnx_model_bytes(bias=3.0)
    tokenizer = files.read_bytes(version.tokenizer.name, key=version.tokenizer_key)
    return tokenizer == wordpiece_tokenizer_json().encode()


def test_tokenizers_are_sealed_too(master_key, alice):
    version = text_version(alice, "words")
    assert version.tokenizer_key
    assert not shares_a_run(wordpiece_tokenizer_json().encode(), stored_bytes(version.tokenizer.name))
    assert readable(version)


def test_rotation_rewraps_every_key_and_can_be_run_again(settings, master_key, alice, capsys):
    versions = [text_version(alice, "first"), text_version(alice, "second")]
    sealed_before = {v.file.name: stored_bytes(v.file.name) for v in versions}
    old, new = master_key, new_key()
    settings.MODEL_ENCRYPTION_KEY, settings.MODEL_ENCRYPTION_KEY_OLD = new, old

    call_command("rotate_model_keys")
    assert "Re-wrapped the keys of 2 version(s); 0 were under the new key already" in capsys.readouterr().out
    new_id = encryption.MasterKey.from_text(new).id
    for version in versions:
        version.refresh_from_db()
        assert version.file_key.startswith(f"1.{new_id}.") and version.tokenizer_key.startswith(
            f"1.{new_id}."
        )
        assert stored_bytes(version.file.name) == sealed_before[version.file.name]  # the files are untouched

    # A run stopped half-way and started again: a version still under the old key is re-wrapped, the others
    # are recognized as done.
    settings.MODEL_ENCRYPTION_KEY, settings.MODEL_ENCRYPTION_KEY_OLD = old, ""
    late = text_version(alice, "late")
    settings.MODEL_ENCRYPTION_KEY, settings.MODEL_ENCRYPTION_KEY_OLD = new, old
    call_command("rotate_model_keys")
    assert "Re-wrapped the keys of 1 version(s); 2 were under the new key already" in capsys.readouterr().out

    settings.MODEL_ENCRYPTION_KEY_OLD = ""
    assert keyring.startup_problem() is None
    assert all(readable(version) for version in [*versions, late])


def test_rotation_without_the_old_key_says_what_to_set(settings, master_key, alice):
    text_version(alice, "first")
    settings.MODEL_ENCRYPTION_KEY = new_key()
    with pytest.raises(CommandError, match="set MODEL_ENCRYPTION_KEY_OLD"):
        call_command("rotate_model_keys")


def test_files_stored_before_the_key_are_sealed_by_a_command(settings, storage_dirs, alice, capsys):
    settings.MODEL_ENCRYPTION_KEY = ""
    version = text_version(alice, "clear")
    clear_names = [version.file.name, version.tokenizer.name]
    assert readable(version)  # stored in the clear, and still readable once the key is set
    settings.MODEL_ENCRYPTION_KEY = new_key()
    assert readable(version) and keyring.startup_problem() is None

    call_command("encrypt_model_files")
    assert "Encrypted 2 file(s)." in capsys.readouterr().out
    version.refresh_from_db()
    assert version.file_key and version.tokenizer_key
    assert not any(files.exists(name) for name in clear_names)
    assert not shares_a_run(onnx_model_bytes(bias=3.0), stored_bytes(version.file.name))
    assert not shares_a_run(wordpiece_tokenizer_json().encode(), stored_bytes(version.tokenizer.name))
    assert readable(version)

    call_command("encrypt_model_files")
    assert "Encrypted 0 file(s)." in capsys.readouterr().out


def test_start_up_is_refused_without_the_key_or_with_the_wrong_one(settings, master_key, alice):
    assert keyring.startup_problem() is None  # nothing encrypted yet
    text_version(alice, "sealed")
    assert keyring.startup_problem() is None

    settings.MODEL_ENCRYPTION_KEY = ""
    assert "MODEL_ENCRYPTION_KEY is not set" in keyring.startup_problem()

    settings.MODEL_ENCRYPTION_KEY = new_key()
    problem = keyring.startup_problem()
    assert "is the wrong key" in problem
    assert encryption.MasterKey.from_text(master_key).id in problem

    settings.MODEL_ENCRYPTION_KEY = "c2hvcnQ="
    assert "must be 32 random bytes, base64-encoded" in keyring.startup_problem()

    settings.MODEL_ENCRYPTION_KEY, settings.MODEL_ENCRYPTION_KEY_OLD = new_key(), master_key
    assert keyring.startup_problem() is None  # mid-rotation: both keys are known


def test_in_s3_files_are_sealed_too_and_read_back_in_parts(s3_server, settings, master_key):
    bucket = s3_server.new_bucket()
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "marketplace.s3.S3ModelStorage",
            "OPTIONS": {
                "bucket_name": bucket,
                "endpoint_url": s3_server.url,
                "region_name": "us-east-1",
                "access_key": s3_server.ACCESS["AWS_ACCESS_KEY_ID"],
                "secret_key": s3_server.ACCESS["AWS_SECRET_ACCESS_KEY"],
            },
        },
    }
    content = os.urandom(9 * CHUNK_SIZE + 3)  # more than one multipart part
    stored = store(content)
    client = s3_server.client()
    sealed = client.get_object(Bucket=bucket, Key=stored.name)["Body"].read()
    assert len(sealed) == encryption.encrypted_size(len(content))
    assert not shares_a_run(content, sealed)
    assert files.read_bytes(stored.name, key=stored.key) == content
    response = files.download_response(stored.name, key=stored.key, filename="m.onnx", size=len(content))
    assert b"".join(response.streaming_content) == content

    client.put_object(Bucket=bucket, Key=stored.name, Body=sealed[: -CHUNK_SIZE // 2])
    with pytest.raises(files.FileMismatch):
        files.download_response(stored.name, key=stored.key, filename="m.onnx", size=len(content))
    with pytest.raises(files.FileMismatch):
        files.read_bytes(stored.name, key=stored.key)


def test_the_admin_shows_which_master_key_a_version_needs_never_a_key(master_key, publish, admin_client):
    version = publish("sealed").versions.get()
    page = admin_client.get(f"/admin/marketplace/modelversion/{version.pk}/change/").content.decode()
    assert f"yes, under master key {encryption.MasterKey.from_text(master_key).id}" in page
    assert master_key not in page and version.file_key not in page


class Zeros:
    """A file object of `size` zero bytes, read a piece at a time (nothing is held whole)."""

    def __init__(self, size: int):
        self.left = size

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        return bytes(size)


def test_memory_stays_flat_whatever_the_file_size(master_key):
    import tracemalloc

    size = 48 * CHUNK_SIZE + 5
    tracemalloc.start()
    try:
        stored, _head = files.store_stream(Zeros(size), limit=1 << 40)
        digest = hashlib.sha256()
        with files.open_stream(stored.name, key=stored.key) as stream:
            for piece in iter(lambda: stream.read(CHUNK_SIZE), b""):
                digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == hashlib.sha256(bytes(size)).hexdigest() == stored.sha256
    assert peak < 8 * CHUNK_SIZE, f"peak {peak} bytes for a {size}-byte file"
