"""`manage.py sweep_model_files`: what a killed upload left in storage goes; every version's file stays."""

from __future__ import annotations

import os
import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from marketplace import files
from marketplace.models import ModelVersion

from .conftest import onnx_model_bytes

pytestmark = pytest.mark.django_db


def age(name: str, hours: float) -> None:
    path = Path(settings.MEDIA_ROOT) / name
    then = time.time() - hours * 3600
    os.utime(path, (then, then))


def test_it_removes_old_files_no_version_uses_and_keeps_the_rest(publish):
    model = publish("kept", content=onnx_model_bytes(bias=2.5))
    [kept] = ModelVersion.objects.filter(model=model).values_list("file", flat=True)
    orphan = files.save_bytes("models/left-by-a-killed-upload", b"\x08\x07half a model")
    recent = files.save_bytes("models/still-uploading", b"\x08\x07a model on its way")
    age(kept, 48)
    age(orphan, 48)
    out = StringIO()
    call_command("sweep_model_files", "--hours", "24", stdout=out)
    assert f"removed {orphan}" in out.getvalue()
    assert not files.exists(orphan)
    assert files.exists(kept)
    assert files.exists(recent)  # may be an upload in progress: too young to judge
    files.delete(recent)


def test_in_s3_it_also_aborts_multipart_uploads_never_finished(s3_server, settings):
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
    client = s3_server.client()
    client.create_multipart_upload(Bucket=bucket, Key="models/killed-mid-upload")
    orphan = files.save_bytes("models/no-version", b"\x08\x07")
    time.sleep(1.1)  # S3 times have second resolution: both are then strictly older than the cutoff
    out = StringIO()
    call_command("sweep_model_files", "--hours", "0", stdout=out)
    assert "aborted 1 unfinished upload(s)" in out.getvalue()
    assert s3_server.unfinished_uploads(bucket) == []
    assert orphan not in s3_server.keys(bucket)
