"""The validation service: sandboxed child process, signatures, verdicts recorded on the version."""

from __future__ import annotations

import pytest

from marketplace import services
from marketplace.models import ModelVersion
from marketplace.sandbox import validation

from .conftest import onnx_model_bytes, torch_export_bytes, upload_file


def test_the_sandbox_child_gets_no_secrets_and_a_memory_limit(tmp_path, monkeypatch, settings):
    settings.MODEL_VALIDATION_MEMORY_MB = 1024
    monkeypatch.setenv("SECRET_KEY", "top-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/x")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://secret")
    monkeypatch.setenv("MODEL_ENCRYPTION_KEY", "bW9kZWwtZW5jcnlwdGlvbi1rZXktMzItYnl0ZXMhISE=")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, resource\n"
        "def no_terminal():\n"
        "    try:\n"
        "        open('/dev/tty').close()\n"
        "    except OSError:\n"
        "        return True\n"
        "    return False\n"
        "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines())\n"
        "print(json.dumps({'env': sorted(os.environ), 'as': resource.getrlimit(resource.RLIMIT_AS)[0],\n"
        "    'cpu': resource.getrlimit(resource.RLIMIT_CPU)[0],\n"
        "    'core': resource.getrlimit(resource.RLIMIT_CORE)[0],\n"
        "    'no_new_privs': status['NoNewPrivs'].strip(), 'session': no_terminal()}),\n"
        "    file=os.fdopen(int(os.environ['MODELPORT_VERDICT_FD']), 'w'))"
    )
    result = validation.run_sandboxed(
        [str(probe)], workdir=str(tmp_path), timeout=30, read_only=(str(probe),)
    )
    answer = result.verdict
    assert not {"SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "MODEL_ENCRYPTION_KEY"} & set(
        answer["env"]
    )
    assert answer["as"] == 1024 << 20
    assert answer["cpu"] == 30
    assert answer["core"] == 0
    assert answer["no_new_privs"] == "1"
    assert answer["session"]


@pytest.mark.django_db
def test_validate_version_records_the_signature_and_format(alice):
    stored = services.store_upload(file=upload_file(torch_export_bytes(), "m.bin"), limit=1 << 30)
    version = services.model_create(owner=alice, name="exported", stored=stored)
    services.validate_version(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.READY
    assert version.format == "torch-export"
    assert version.model.latest_format == "torch-export"
    assert version.signature["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]


@pytest.mark.django_db
def test_an_upload_not_validated_in_time_answers_202_with_a_status_url(api, client, settings):
    # No worker here and a zero wait: the request must not block, and must say where to look.
    settings.MODEL_UPLOAD_WAIT_SECONDS = 0
    response = api.post(
        "/api/v1/models", {"name": "slow", "file": upload_file(onnx_model_bytes())}, format="multipart"
    )
    assert response.status_code == 202
    assert response.json()["url"] == "/api/v1/models/alice/slow/versions/1"
    assert response.json()["status"] == "validating"
    assert api.get("/api/v1/models/alice/slow/versions/1").json()["status"] == "validating"
    # Not published yet: other people do not see it, even though it is public.
    assert client.get("/api/v1/models/alice/slow").status_code == 404
    assert client.get("/models/alice/slow/").status_code == 404


@pytest.mark.django_db
def test_validation_reads_the_file_from_storage_by_its_hash(alice, settings, tmp_path):
    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"  # this worker's own, empty cache
    from marketplace import files

    stored = services.store_upload(file=upload_file(onnx_model_bytes(bias=9.5), "m.onnx"), limit=1 << 30)
    version = services.model_create(owner=alice, name="from-storage", stored=stored)
    files.delete(stored.name)  # storage out of reach, or the file gone: nothing to judge yet
    with pytest.raises(files.FileUnavailable):
        services.validate_version(version_id=version.pk)  # the task is retried (RETRIED_ON)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.VALIDATING

    files.save_bytes(stored.name, onnx_model_bytes(bias=1.5))  # other bytes than were uploaded
    services.validate_version(version_id=version.pk)
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.REJECTED
    assert "not the one uploaded" in version.reason
    assert not (tmp_path / "cache" / version.sha256).exists()


def test_the_validation_task_is_retried_while_storage_is_out_of_reach():
    from marketplace import files
    from marketplace.tasks import RETRIED_ON

    assert issubclass(files.FileUnavailable, RETRIED_ON)
