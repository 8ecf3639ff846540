"""MODEL_STORAGE=s3: a live gunicorn and Celery worker keep model files in an S3-compatible bucket (moto's
server, over HTTP), never on their disk: upload, validation, prediction and download all go through it."""

from __future__ import annotations

import hashlib
import socket
import time
import uuid

import pytest
import requests

from marketplace.models import Model, ModelVersion
from portal.models import ApiKey
from tests.conftest import ServingStack
from tests.inference.text_builders import tiny_encoder_onnx, wordpiece_tokenizer_json

from .conftest import onnx_model_bytes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def version_file(model: str) -> str:
    return ModelVersion.objects.get(model__name=model).file.name


def encoder_file(keys) -> str:
    return version_file("encoder")


def files_under(folder) -> list[str]:
    return sorted(str(path) for path in folder.rglob("*") if path.is_file())


def test_a_model_kept_in_s3_is_uploaded_validated_run_and_downloaded(alice, tmp_path, s3_server):
    bucket = s3_server.new_bucket()
    media = tmp_path / "media"
    media.mkdir()
    stack = ServingStack(
        tmp_path,
        **s3_server.storage_env(bucket),
        MEDIA_ROOT=str(media),
        INFERENCE_MODEL_CACHE_DIR=str(tmp_path / "model-cache"),
        PREDICTION_INLINE_OUTPUT_BYTES="16",  # every prediction's outputs are kept in storage too
    ).start()
    key = ApiKey.issue(user=alice, name="s3", scopes=["read", "predict", "upload"])[1]
    auth = {"Authorization": f"Bearer {key}"}
    content = onnx_model_bytes(bias=0.125)
    try:
        uploaded = requests.post(
            f"{stack.web.url}/api/v1/models",
            headers=auth,
            data={"name": "in-the-bucket", "task": "tabular-regression"},
            files={"file": ("tiny.onnx", content, "application/octet-stream")},
            timeout=120,
        )
        assert uploaded.status_code == 201, uploaded.text
        [version] = uploaded.json()["versions"]
        assert version["status"] == "ready"
        assert version["sha256"] == hashlib.sha256(content).hexdigest()

        predicted = requests.post(
            f"{stack.web.url}/api/v1/models/alice/in-the-bucket/predict",
            headers=auth,
            json={"inputs": {"features": [[1.0, 2.0, 3.0, 4.0]]}},
            timeout=60,
        )
        assert predicted.status_code == 200, predicted.text
        assert predicted.json()["status"] == "succeeded"
        assert predicted.json()["outputs"][0]["shape"] == [1, 3]

        downloaded = requests.get(
            f"{stack.web.url}/api/v1/models/alice/in-the-bucket/versions/1/file", headers=auth, timeout=60
        )
        assert downloaded.status_code == 200
        assert downloaded.content == content
        assert downloaded.headers["X-Content-SHA256"] == version["sha256"]

        # A text model: its tokenizer.json is kept in the bucket too, and read from there to tokenize.
        encoder = requests.post(
            f"{stack.web.url}/api/v1/models",
            headers=auth,
            data={"name": "encoder", "task": "feature-extraction"},
            files={
                "file": ("encoder.onnx", tiny_encoder_onnx(), "application/octet-stream"),
                "tokenizer": ("tokenizer.json", wordpiece_tokenizer_json().encode(), "application/json"),
            },
            timeout=120,
        )
        assert encoder.status_code == 201, encoder.text
        embedded = requests.post(
            f"{stack.web.url}/api/v1/models/alice/encoder/predict",
            headers=auth,
            json={"text": ["the cat sat"]},
            timeout=60,
        )
        assert embedded.status_code == 200, embedded.text
        assert len(embedded.json()["embeddings"][0]) == 16

        # The record's outputs, over the inline limit, are read back from the bucket.
        record_url = f"{stack.web.url}/api/v1/predictions/{predicted.json()['id']}"
        deadline = time.monotonic() + 30
        while (record := requests.get(record_url, headers=auth, timeout=10)).status_code != 200:
            assert time.monotonic() < deadline, record.text
            time.sleep(0.2)
        assert record.json()["outputs"] == predicted.json()["outputs"]
    finally:
        stack.stop()

    keys = s3_server.keys(bucket)
    [stored] = [name for name in keys if name.startswith("models/") and name != encoder_file(keys)]
    assert stored == version_file("in-the-bucket")
    body = s3_server.client().get_object(Bucket=bucket, Key=stored)["Body"].read()
    assert body == content
    assert any(name.startswith("tokenizers/") for name in keys)
    assert f"predictions/{predicted.json()['id']}.json" in keys
    assert s3_server.unfinished_uploads(bucket) == []
    assert files_under(media) == []  # the web's and the worker's MEDIA_ROOT: nothing was written there


def test_an_upload_refused_by_s3_storage_leaves_no_object(alice, tmp_path, s3_server):
    bucket = s3_server.new_bucket()
    stack = ServingStack(tmp_path, **s3_server.storage_env(bucket), MODEL_UPLOAD_MAX_BYTES="20000000").start()
    key = ApiKey.issue(user=alice, name="s3", scopes=["read", "predict", "upload"])[1]
    try:
        not_a_model = requests.post(
            f"{stack.web.url}/api/v1/models",
            headers={"Authorization": f"Bearer {key}"},
            data={"name": "not-a-model"},
            files={"file": ("notes.txt", b"just some text\n" * 1000, "text/plain")},
            timeout=60,
        )
        assert not_a_model.status_code == 415, not_a_model.text
        # Over the limit by less than the multipart allowance, so found only while streaming: two parts
        # were sent to S3 by then, and are dropped.
        big = b"\x08\x07" + bytes(20_500_000)
        too_big = requests.post(
            f"{stack.web.url}/api/v1/models",
            headers={"Authorization": f"Bearer {key}"},
            data={"name": "too-big"},
            files={"file": ("big.onnx", big, "application/octet-stream")},
            timeout=120,
        )
        assert too_big.status_code == 413, too_big.text
    finally:
        stack.stop()
    assert s3_server.keys(bucket) == []
    assert s3_server.unfinished_uploads(bucket) == []


def test_an_upload_cut_off_halfway_leaves_no_object_and_no_row(alice, tmp_path, s3_server):
    bucket = s3_server.new_bucket()
    stack = ServingStack(tmp_path, **s3_server.storage_env(bucket)).start()
    key = ApiKey.issue(user=alice, name="s3", scopes=["read", "predict", "upload"])[1]
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\ncut-off\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="m.onnx"\r\n\r\n'
    ).encode()
    declared = len(head) + 40_000_000
    try:
        with socket.create_connection(("127.0.0.1", stack.web.port)) as connection:
            connection.sendall(
                (
                    f"POST /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                    f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
                    f"Content-Length: {declared}\r\n\r\n"
                ).encode()
                + head
                + b"\x08\x07"
            )
            for _ in range(20):  # 20 MB of the 40 declared: two parts are in S3 by then
                connection.sendall(bytes(1 << 20))
        # The web notices the body ended short, aborts the multipart upload it had begun, and logs the
        # request's end.
        deadline = time.monotonic() + 30
        while "/api/v1/models" not in stack.web.log_text():
            assert time.monotonic() < deadline, stack.logs()[-3000:]
            time.sleep(0.2)
    finally:
        stack.stop()
    assert s3_server.keys(bucket) == []
    assert s3_server.unfinished_uploads(bucket) == []
    assert not Model.objects.filter(name="cut-off").exists()
