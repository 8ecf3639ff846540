"""schemathesis, the real CLI, against the live server: predict and upload answer no 5xx, their responses
match the OpenAPI document, and the document describes what they accept (no "schema validation mismatch")."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from marketplace.serializers import tiny_onnx_example
from portal.models import ApiKey
from portal.services import quota_set

from . import builders

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Generated model names repeat (hypothesis favours short ones), and a taken name is refused with a 400 about
# the data, not the schema: the first upload of a model is held to no 5xx and conforming responses only.
CHECKED_FOR_MISMATCH = ["/api/v1/models/{owner}/{name}/predict", "/api/v1/models/{owner}/{name}/versions"]
UPLOAD = ["/api/v1/models"]


def run_schemathesis(
    live_web, tmp_path: Path, key: str, model: str, operations: list[str], *, fail_on_mismatch: bool
) -> subprocess.CompletedProcess:
    # Path parameters name a real model whose input fits the documented example; warnings fail the run.
    config = tmp_path / "schemathesis.toml"
    # Uploads: most cases carry a real model file and JSON fields that parse (test data, as schemathesis
    # advises); the rest stay fuzzed. TOML basic strings take JSON's escapes.
    config.write_text(
        f"[dictionaries.models]\nvalues = [{json.dumps(tiny_onnx_example())}]\n"
        f"[dictionaries.examples]\nvalues = [{json.dumps(json.dumps({'x': [[1, 2, 3]]}))}]\n"
        '[dictionaries.objects]\nvalues = ["{}"]\n\n'
        f'[parameters]\n"path.owner" = "alice"\n"path.name" = "{model}"\n'
        '"body.file" = { dictionary = "models", probability = 0.8 }\n'
        '"body.example" = { dictionary = "examples", probability = 0.8 }\n'
        '"body.preprocessing" = { dictionary = "objects", probability = 0.8 }\n'
        '"body.signature" = { dictionary = "objects", probability = 0.8 }\n\n'
        + ('[warnings]\nfail-on = ["validation_mismatch"]\n' if fail_on_mismatch else "")
    )
    schemathesis = Path(sys.executable).with_name("schemathesis")
    return subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(config),
            "run",
            f"{live_web.url}/api/schema/",
            "--url",
            live_web.url,
            "--header",
            f"Authorization: Bearer {key}",
            *[argument for path in operations for argument in ("--include-path", path)],
            "--exclude-method",
            "GET",
            # The coverage phase re-sends the example's model name, which then is taken (a 400 about the
            # data it chose, not about the schema): examples, then fuzzing with fresh names.
            "--phases",
            "examples,fuzzing",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "25",
            "--seed",
            "7",
            "--workers",
            "1",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=280,
        cwd=tmp_path,
    )


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch_on_predict_and_upload(
    live_web, celery_worker_process, alice, tmp_path
):
    name = f"fuzz-{uuid.uuid4().hex[:8]}"
    builders.publish(
        owner=alice,
        name=name,
        data=builders.onnx_model(
            [helper.make_node("Add", ["x", "one"], ["y"])],
            [("x", TensorProto.FLOAT, [-1, 3])],
            [("y", TensorProto.FLOAT, [-1, 3])],
            [helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
        ),
    )
    quota_set(user=alice, requests_per_minute=100_000, requests_per_day=100_000)
    _, key = ApiKey.issue(user=alice, name="fuzz", scopes=["read", "predict", "upload"])
    result = run_schemathesis(live_web, tmp_path, key, name, CHECKED_FOR_MISMATCH, fail_on_mismatch=True)
    output = result.stdout + result.stderr
    assert "Schema validation mismatch" not in output, output[-6000:]
    assert "Server error" not in output, output[-6000:]
    assert result.returncode == 0, output[-6000:]
    assert "2 selected" in output, output[-6000:]

    result = run_schemathesis(live_web, tmp_path, key, name, UPLOAD, fail_on_mismatch=False)
    output = result.stdout + result.stderr
    assert "Server error" not in output, output[-6000:]
    assert result.returncode == 0, output[-6000:]
    assert "1 selected" in output, output[-6000:]
