"""A 1 GB upload to a live gunicorn streams into storage with flat memory: the web process's peak resident
size stays under 200 MB, the bytes are written once (to their final file, or to S3 only), and the stored file
is the one sent (sha256 and size)."""

from __future__ import annotations

import hashlib
import http.client
import shutil
import uuid
from pathlib import Path

import pytest
import requests

from marketplace.models import ModelVersion
from portal.models import ApiKey
from portal.quotas import quota_for
from tests.conftest import WebServer

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIZE = 1 << 30
BLOCK = 1 << 20
PEAK_LIMIT = 200 * 1024 * 1024


def generated_model_file():
    """SIZE bytes made up here, a block at a time: a protobuf field key first, so the web's first-bytes check
    takes it for an ONNX file (the worker would judge the rest; none runs in this test)."""
    seed = hashlib.sha256(b"modelport").digest() * (BLOCK // 32)
    yield b"\x08\x07" + seed[2:]
    for number in range(1, SIZE // BLOCK):
        yield number.to_bytes(8, "big") + seed[8:]


def multipart_upload(boundary: str):
    """The request body's pieces and its total length, known before a byte is sent (Django needs it)."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nhuge\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="huge.onnx"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head, tail, len(head) + SIZE + len(tail)


def sha256_of(blocks) -> str:
    digest = hashlib.sha256()
    for block in blocks:
        digest.update(block)
    return digest.hexdigest()


def peak_resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


def bytes_written(pid: int) -> int:
    """What the process passed to write() on files (not sockets): a second copy of the upload would show."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError(f"no wchar for {pid}")


@pytest.mark.parametrize("storage", ["filesystem", "s3"])
def test_a_gigabyte_upload_streams_with_flat_memory(storage, alice, tmp_path, monkeypatch, request):
    quota = quota_for(alice)
    quota.max_upload_bytes = 2 * SIZE
    quota.save()
    key = ApiKey.issue(user=alice, name="big", scopes=["read", "upload"])[1]
    media = tmp_path / "media"
    for name, value in {
        "MEDIA_ROOT": str(media),
        "MODEL_UPLOAD_MAX_BYTES": str(2 * SIZE),
        "MODEL_UPLOAD_WAIT_SECONDS": "0",  # answer 202 at once: no worker validates here
        "INFERENCE_JOB_QUEUE": f"nobody-{uuid.uuid4().hex[:8]}",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }.items():
        monkeypatch.setenv(name, value)
    (tmp_path / "metrics").mkdir()
    if storage == "s3":  # an S3 multipart upload, a part at a time
        s3_server = request.getfixturevalue("s3_server")
        bucket = s3_server.new_bucket()
        for name, value in s3_server.storage_env(bucket).items():
            monkeypatch.setenv(name, value)
    web = WebServer(tmp_path / "gunicorn.log", workers=1, threads=2)
    web.start()
    try:
        [worker] = web.serving_pids()
        boundary = uuid.uuid4().hex
        head, tail, length = multipart_upload(boundary)
        digest = hashlib.sha256()
        connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=600)
        connection.putrequest("POST", "/api/v1/models")
        connection.putheader("Authorization", f"Bearer {key}")
        connection.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        connection.putheader("Content-Length", str(length))
        connection.endheaders()
        connection.send(head)
        for block in generated_model_file():
            digest.update(block)
            connection.send(block)
        connection.send(tail)
        answer = connection.getresponse()
        body = answer.read().decode()
        connection.close()
        assert answer.status == 202, body
        peak = peak_resident_bytes(worker)
        # Written once: to its final file (a staging or temporary copy would double it), or not to disk at
        # all on its way to S3.
        written = bytes_written(worker)
        assert written < (SIZE + SIZE // 10 if storage == "filesystem" else SIZE // 16), written
        assert peak < PEAK_LIMIT, f"the web worker's peak resident size was {peak / 2**20:.0f} MB"

        version = requests.get(
            f"{web.url}/api/v1/models/alice/huge/versions/1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ).json()
        assert version["sha256"] == digest.hexdigest()
        assert version["size"] == SIZE
        name = ModelVersion.objects.get(model__name="huge").file.name
        if storage == "s3":
            stored = s3_server.client().get_object(Bucket=bucket, Key=name)["Body"]
            assert sha256_of(iter(lambda: stored.read(BLOCK), b"")) == digest.hexdigest()
            assert s3_server.keys(bucket) == [name]
            assert not media.exists() or [p for p in media.rglob("*") if p.is_file()] == []
        else:
            stored = media / name
            assert stored.stat().st_size == SIZE
            # One copy, in its final place: nothing staged or left in a temporary folder under MEDIA_ROOT.
            assert [p for p in media.rglob("*") if p.is_file()] == [stored]
    finally:
        web.stop()
        # A gigabyte is not left behind: pytest keeps the last runs' folders, moto its objects in memory.
        shutil.rmtree(media, ignore_errors=True)
        if storage == "s3":
            for name in s3_server.keys(bucket):
                s3_server.client().delete_object(Bucket=bucket, Key=name)
