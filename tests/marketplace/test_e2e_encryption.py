"""MODEL_ENCRYPTION_KEY on live servers: a gunicorn and a Celery worker store model files and tokenizers
sealed, validate, run and serve them; nothing at rest holds the plaintext, the database holds no master key,
a key rotation keeps everything working under the new key alone, and a wrong or missing key stops them."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from django.db import connection

from marketplace.models import ModelVersion
from portal.models import ApiKey
from tests.conftest import PROJECT_ROOT, ServingStack, WebServer, WorkerProcess, database_url_for_test_db
from tests.inference.test_e2e_runners import runner_pids
from tests.inference.text_builders import tiny_encoder_onnx, wordpiece_tokenizer_json
from tests.servers import PG_BIN, as_postgres

from .conftest import onnx_model_bytes
from .test_encryption import shares_a_run

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MODEL = onnx_model_bytes(bias=0.375)  # content no other test stores


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def storage_env(root: Path, key: str) -> dict[str, str]:
    """The stack's storage: the files (MEDIA_ROOT) shared by every stack of the test, its own caches."""
    return {
        "MODEL_ENCRYPTION_KEY": key,
        "MEDIA_ROOT": str(root.parent / "media"),
        "INFERENCE_MODEL_CACHE_DIR": str(root / "model-cache"),
        "INFERENCE_DECRYPTED_MODEL_DIR": str(root / "decrypted"),
    }


def start_stack(root: Path, key: str) -> ServingStack:
    root.mkdir()
    return ServingStack(root, **storage_env(root, key)).start()


def upload(stack: ServingStack, auth: dict) -> None:
    tabular = requests.post(
        f"{stack.web.url}/api/v1/models",
        headers=auth,
        data={"name": "sealed", "task": "tabular-regression"},
        files={"file": ("sealed.onnx", MODEL)},
        timeout=120,
    )
    assert tabular.status_code == 201, tabular.text
    assert tabular.json()["versions"][0]["status"] == "ready"
    text = requests.post(
        f"{stack.web.url}/api/v1/models",
        headers=auth,
        data={"name": "words", "task": "feature-extraction"},
        files={
            "file": ("encoder.onnx", tiny_encoder_onnx()),
            "tokenizer": ("t.json", wordpiece_tokenizer_json()),
        },
        timeout=120,
    )
    assert text.status_code == 201, text.text
    assert text.json()["versions"][0]["status"] == "ready"


def assert_it_serves(stack: ServingStack, auth: dict) -> None:
    predicted = requests.post(
        f"{stack.web.url}/api/v1/models/alice/sealed/predict",
        headers=auth,
        json={"inputs": {"features": [[1.0, 2.0, 3.0, 4.0]]}},
        timeout=60,
    )
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["outputs"][0]["data"] == pytest.approx([6.375, 7.375, 8.375])
    embedded = requests.post(
        f"{stack.web.url}/api/v1/models/alice/words/predict",
        headers=auth,
        json={"text": "the cat"},
        timeout=60,
    )
    assert embedded.status_code == 200, embedded.text
    assert len(embedded.json()["embeddings"]) == 1
    downloaded = requests.get(
        f"{stack.web.url}/api/v1/models/alice/sealed/versions/1/file", headers=auth, timeout=60
    )
    assert downloaded.status_code == 200
    assert hashlib.sha256(downloaded.content).hexdigest() == hashlib.sha256(MODEL).hexdigest()
    assert downloaded.content == MODEL


def files_under(*folders: Path) -> list[Path]:
    return [path for folder in folders if folder.exists() for path in folder.rglob("*") if path.is_file()]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, DATABASE_URL=database_url_for_test_db(), **env)
    for name in ("MODEL_ENCRYPTION_KEY", "MODEL_ENCRYPTION_KEY_OLD"):
        if name not in env:
            environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def pg_dump() -> bytes:
    db = connection.settings_dict
    dumped = as_postgres(
        [str(PG_BIN / "pg_dump"), "-h", db["HOST"], "-p", str(db["PORT"]), "-U", db["USER"], db["NAME"]],
        capture_output=True,
        env=dict(os.environ, PGPASSWORD=db.get("PASSWORD") or ""),
    )
    assert dumped.returncode == 0, dumped.stderr
    return dumped.stdout


def test_sealed_files_are_served_survive_a_key_rotation_and_a_wrong_key_stops_the_servers(alice, tmp_path):
    key = ApiKey.issue(user=alice, name="sealed", scopes=["read", "predict", "upload"])[1]
    auth = {"Authorization": f"Bearer {key}"}
    old_key, new = new_key(), new_key()
    media = tmp_path / "media"

    first = start_stack(tmp_path / "first", old_key)
    try:
        upload(first, auth)
        assert_it_serves(first, auth)
        # The runners that opened the models never had the master key.
        runners = runner_pids(first.worker)
        assert runners
        for pid in runners:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            assert b"MODEL_ENCRYPTION_KEY" not in environ and old_key.encode() not in environ
    finally:
        first.stop()
    assert old_key not in first.logs()

    # Nothing at rest holds the plaintext: the stored files and the model cache on disk (the decrypted copies
    # live in the worker's private folder, in memory by default).
    at_rest = files_under(media, tmp_path / "first" / "model-cache")
    assert len(files_under(media)) == 3  # two model files and a tokenizer
    for secret in (MODEL, tiny_encoder_onnx(), wordpiece_tokenizer_json().encode()):
        assert [path for path in at_rest if shares_a_run(secret, path.read_bytes())] == []
    decrypted = files_under(tmp_path / "first" / "decrypted")
    # The worker's, read-only, and readable by the runners' group only: nobody else reads the plaintext.
    assert decrypted and all(path.stat().st_mode & 0o227 == 0 for path in decrypted)

    # The database holds the wrapped keys, never the master key, in any encoding.
    dump = pg_dump()
    assert ModelVersion.objects.get(model__name="sealed").file_key.encode() in dump
    raw = base64.b64decode(old_key)
    for form in (old_key.encode(), raw, raw.hex().encode(), base64.urlsafe_b64encode(raw).rstrip(b"=")):
        assert form not in dump

    rotated = manage("rotate_model_keys", MODEL_ENCRYPTION_KEY=new, MODEL_ENCRYPTION_KEY_OLD=old_key)
    assert rotated.returncode == 0, rotated.stderr
    assert "Re-wrapped the keys of 2 version(s)" in rotated.stdout
    again = manage("rotate_model_keys", MODEL_ENCRYPTION_KEY=new, MODEL_ENCRYPTION_KEY_OLD=old_key)
    assert "Re-wrapped the keys of 0 version(s); 2 were under the new key already" in again.stdout

    second = start_stack(tmp_path / "second", new)  # the new key alone, and caches of its own
    try:
        assert_it_serves(second, auth)
        # A sealed file altered at rest is refused, never run: its decrypted copy dropped, the worker has to
        # decrypt it again and finds the change.
        version = ModelVersion.objects.get(model__name="sealed")
        stored = media / version.file.name
        sealed = stored.read_bytes()
        stored.write_bytes(sealed[:40] + bytes([sealed[40] ^ 1]) + sealed[41:])
        (tmp_path / "second" / "decrypted" / version.sha256).unlink()
        refused = requests.post(
            f"{second.web.url}/api/v1/models/alice/sealed/predict",
            headers=auth,
            json={"inputs": {"features": [[1.0, 2.0, 3.0, 4.0]]}},
            timeout=60,
        )
        assert refused.status_code == 503, refused.text
        download = requests.get(
            f"{second.web.url}/api/v1/models/alice/sealed/versions/1/file", headers=auth, timeout=60
        )
        assert download.status_code == 503 and "integrity check" in download.json()["detail"]
        assert not (tmp_path / "second" / "decrypted" / version.sha256).exists()
        stored.write_bytes(sealed)
    finally:
        second.stop()

    # The old key alone, or none: the servers do not start, and say why.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in storage_env(wrong, old_key).items():
            patch.setenv(name, value)
        worker = WorkerProcess(wrong / "worker.log", ["-Q", "encryption-wrong-key"])
        with pytest.raises(RuntimeError, match="the worker exited"):
            worker.start()
        assert "MODEL_ENCRYPTION_KEY is the wrong key" in worker.log_text()
        web = WebServer(wrong / "gunicorn.log")
        with pytest.raises(RuntimeError, match="the web server exited"):
            web.start()
        assert "MODEL_ENCRYPTION_KEY is the wrong key" in web.log_text()
    grpc = manage("grpcserver", "--port", "0", MODEL_ENCRYPTION_KEY=old_key)
    assert grpc.returncode != 0 and "MODEL_ENCRYPTION_KEY is the wrong key" in grpc.stderr
    missing = manage("check")
    assert missing.returncode != 0
    assert (
        "2 model version(s) have files stored encrypted, but MODEL_ENCRYPTION_KEY is not set"
        in missing.stderr
    )
    assert manage("check", MODEL_ENCRYPTION_KEY=new).returncode == 0
