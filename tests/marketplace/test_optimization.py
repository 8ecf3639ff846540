"""Optimizing a version, without the worker: the request's answers, the new version's row, which version is
the default, the page's button and sentence, the schema, and the sandboxed optimizer run directly."""

from __future__ import annotations

import json
import math

import pytest
from django.core.management import call_command

from inference import services as inference_services
from marketplace import selectors, services
from marketplace.models import ModelVersion
from marketplace.optimization import optimization_summary, run_optimization
from tests.portal.test_outages import broker_down

from .conftest import onnx_model_bytes, upload_file
from .optimize_models import digits_example, trained_mlp

pytestmark = pytest.mark.django_db

TINY_SIGNATURE = {
    "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [{"name": "scores", "datatype": "FP32", "shape": [-1, 3]}],
}


def optimize(api, slug: str, body: dict | None = None, number: int = 1):
    return api.post(f"/api/v1/models/{slug}/versions/{number}/optimize", body or {}, format="json")


def ready_version(model, *, content: bytes, **fields) -> ModelVersion:
    """A further ready version of `model`, made directly (no worker)."""
    stored = services.store_upload(file=upload_file(content), limit=1 << 30)
    version = services.version_create(model=model, stored=stored)
    ModelVersion.objects.filter(pk=version.pk).update(
        status="ready", format="onnx", signature=TINY_SIGNATURE, **fields
    )
    return ModelVersion.objects.get(pk=version.pk)


# --- the request --------------------------------------------------------------------------------------------


def test_it_answers_202_with_the_new_versions_url_and_records_where_it_comes_from(api, publish, alice_client):
    publish("tiny", task="tabular-classification")
    response = optimize(api, "alice/tiny", {"method": "dynamic-int8"})
    assert response.status_code == 202, response.content
    assert response.json() == {
        "number": 2,
        "status": "validating",
        "url": "/api/v1/models/alice/tiny/versions/2",
        "detail": "Optimizing version 1 into version 2; poll the url for the result.",
    }
    detail = api.get("/api/v1/models/alice/tiny/versions/2").json()
    assert detail["status"] == "validating"
    assert detail["derived_from"] == 1
    assert detail["optimization"] == {"method": "dynamic-int8", "low_agreement": False, "summary": ""}
    assert detail["file_url"] is None
    # Until the job is done the owner's page shows the row in progress and follows it.
    page = alice_client.get("/models/alice/tiny/").content.decode()
    assert "optimizing v1 (dynamic-int8)…" in page
    assert 'data-pending-url="/api/v1/models/alice/tiny/versions/2"' in page
    assert "js/version-progress.js" in page


def test_the_method_defaults_to_dynamic_int8(api, publish):
    publish("tiny")
    assert optimize(api, "alice/tiny").status_code == 202
    assert ModelVersion.objects.get(number=2).optimization == {"method": "dynamic-int8"}


def test_it_rejects_an_unknown_method_naming_it(api, publish):
    publish("tiny")
    response = optimize(api, "alice/tiny", {"method": "fp4-magic"})
    assert response.status_code == 400
    assert response.json() == {
        "method": ["Unknown method 'fp4-magic': use one of dynamic-int8, static-int8."]
    }
    assert ModelVersion.objects.count() == 1


def test_it_rejects_a_version_that_is_not_ready_with_409(api, publish):
    model = publish("tiny")
    stored = services.store_upload(file=upload_file(onnx_model_bytes(0.5)), limit=1 << 30)
    services.version_create(model=model, stored=stored)  # stays `validating`: no worker here
    response = optimize(api, "alice/tiny", number=2)
    assert response.status_code == 409
    assert response.json()["detail"] == "Version 2 is validating: only a ready version can be optimized."


def test_it_answers_404_for_a_version_that_does_not_exist(api, publish):
    publish("tiny")
    assert optimize(api, "alice/tiny", number=7).status_code == 404


def test_an_uploaded_version_has_no_derivation(api, publish):
    publish("tiny")
    detail = api.get("/api/v1/models/alice/tiny/versions/1").json()
    assert detail["derived_from"] is None and detail["optimization"] is None


def test_where_a_version_comes_from_cannot_change(api, publish):
    publish("tiny")
    optimize(api, "alice/tiny")
    version = ModelVersion.objects.get(number=2)
    version.derived_from = None
    with pytest.raises(ValueError, match="derived_from"):
        version.save()


# --- the default version ------------------------------------------------------------------------------------


def test_a_low_agreement_version_is_never_the_default(api, publish):
    model = publish("tiny")
    marked = ready_version(model, content=onnx_model_bytes(0.5), low_agreement=True)
    assert selectors.latest_ready_version(model).number == 1
    assert inference_services.target_find(owner="alice", name="tiny", number=None, user=None).number == 1
    assert inference_services.target_find(owner="alice", name="tiny", number=2, user=None).number == 2
    assert [v["number"] for v in api.get("/api/v1/models/alice/tiny").json()["versions"]] == [2, 1]
    # A later version that agrees (or any upload) is the default again.
    ready_version(model, content=onnx_model_bytes(0.75))
    inference_services.targets_forget()
    assert selectors.latest_ready_version(model).number == 3
    assert inference_services.target_find(owner="alice", name="tiny", number=None, user=None).number == 3
    assert marked.number == 2


# --- the sentence -------------------------------------------------------------------------------------------


def test_the_sentence_says_what_was_gained_and_what_it_cost():
    measured = {"size_before": 4100, "size_after": 1000, "speedup": 1.8, "agreement": 0.992, "inputs": 512}
    assert optimization_summary(measured) == (
        "4.1× smaller, 1.8× faster here, top label unchanged on 99.2 % of 512 inputs"
    )
    slower = {**measured, "speedup": 0.5, "size_after": 5000}
    assert optimization_summary(slower) == (
        "1.2× larger, 2.0× slower here, top label unchanged on 99.2 % of 512 inputs"
    )
    regression = {**measured, "agreement": None, "max_abs_diff": 0.01234}
    assert optimization_summary(regression) == (
        "4.1× smaller, 1.8× faster here, outputs within 0.0123 on 512 inputs"
    )
    assert optimization_summary({"method": "dynamic-int8"}) == ""


# --- the page -----------------------------------------------------------------------------------------------


def test_the_owner_sees_an_optimize_button_on_ready_onnx_versions_only(publish, alice_client, client, bob):
    publish("tiny")
    publish("scripted", fmt="torchscript")
    page = alice_client.get("/models/alice/tiny/").content.decode()
    assert 'action="/models/alice/tiny/versions/1/optimize/"' in page
    assert '<option value="static-int8">' in page and "csrfmiddlewaretoken" in page
    assert "/optimize/" not in alice_client.get("/models/alice/scripted/").content.decode()
    client.force_login(bob)
    assert "/optimize/" not in client.get("/models/alice/tiny/").content.decode()


def test_the_optimize_button_starts_the_job_and_the_page_says_so(publish, alice_client):
    publish("tiny")
    response = alice_client.post("/models/alice/tiny/versions/1/optimize/", {"method": "static-int8"})
    assert response.status_code == 302
    assert ModelVersion.objects.get(number=2).optimization == {"method": "static-int8"}
    page = alice_client.get(response["Location"]).content.decode()
    assert "Version 2 is being made from version 1 (static-int8)" in page


def test_the_optimize_button_refuses_what_the_api_refuses(publish, alice_client):
    publish("tiny")
    publish("scripted", fmt="torchscript")
    unknown = alice_client.post("/models/alice/tiny/versions/1/optimize/", {"method": "fp4-magic"})
    assert unknown.status_code == 400 and "Unknown method" in unknown.content.decode()
    scripted = alice_client.post("/models/alice/scripted/versions/1/optimize/")
    assert scripted.status_code == 415 and "only ONNX versions can be optimized" in scripted.content.decode()
    assert alice_client.post("/models/alice/tiny/versions/9/optimize/").status_code == 404
    assert ModelVersion.objects.count() == 2


def test_the_page_shows_the_measured_sentence_and_the_low_agreement_mark(publish, alice_client):
    model = publish("tiny")
    measured = {
        "method": "dynamic-int8",
        "size_before": 4100,
        "size_after": 1000,
        "speedup": 1.8,
        "agreement": 0.5,
        "inputs": 512,
        "min_agreement": 0.95,
    }
    ready_version(model, content=onnx_model_bytes(0.5), optimization=measured, low_agreement=True)
    ModelVersion.objects.filter(number=2).update(derived_from=model.versions.get(number=1))
    page = alice_client.get("/models/alice/tiny/").content.decode()
    assert "Optimized from v1 (dynamic-int8)" in page
    assert "4.1× smaller, 1.8× faster here, top label unchanged on 50.0 % of 512 inputs" in page
    assert "low agreement" in page and "fewer than 95 %" in page and "not the default for predict" in page


# --- the schema ---------------------------------------------------------------------------------------------


def test_the_schema_documents_the_endpoint_and_the_version_fields(tmp_path):
    target = tmp_path / "schema.json"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(target)
    )
    schema = json.loads(target.read_text())
    operation = schema["paths"]["/api/v1/models/{owner}/{name}/versions/{number}/optimize"]["post"]
    assert {"202", "400", "403", "409", "415"} <= set(operation["responses"])
    version = schema["components"]["schemas"]["Version"]["properties"]
    assert {"derived_from", "optimization"} <= set(version)
    assert version["derived_from"]["nullable"] and version["optimization"]["nullable"]  # null for uploads
    assert version["optimization"]["properties"]["method"]["enum"] == ["dynamic-int8", "static-int8"]


# --- the sandboxed optimizer, run directly ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["dynamic-int8", "static-int8"])
def test_the_optimizer_quantizes_and_measures_both_models_in_one_run(tmp_path, method):
    content, _ = trained_mlp()
    source = tmp_path / "mlp.onnx"
    source.write_bytes(content)
    workdir = tmp_path / "work"
    workdir.mkdir()
    outcome = run_optimization(
        source,
        method=method,
        signature={"inputs": [{"name": "pixels", "datatype": "FP32", "shape": [-1, 64]}]},
        task="image-classification",
        example=digits_example(),
        workdir=str(workdir),
    )
    assert outcome.ok, outcome.reason
    assert outcome.path.stat().st_size < len(content)
    measured = outcome.measured
    assert measured["inputs"] == 4 + 512  # the example's rows and the generated ones
    assert measured["agreement"] >= 0.95
    assert math.isfinite(measured["speedup"]) and measured["speedup"] > 0
    assert measured["runs"]["original"] == measured["runs"]["optimized"] > 0


def test_the_optimizer_reports_a_model_it_cannot_measure(tmp_path):
    source = tmp_path / "tiny.onnx"
    source.write_bytes(onnx_model_bytes())
    outcome = run_optimization(
        source,
        method="dynamic-int8",
        signature=TINY_SIGNATURE,
        task="other",
        example={"features": [[1, 2, 3]]},  # three values for four features
        workdir=str(tmp_path),
    )
    assert not outcome.ok
    assert outcome.reason.startswith("The version's example does not fit the model")


def test_the_optimizer_measures_a_text_model_on_variations_of_its_example(tmp_path):
    from tests.inference.text_builders import tiny_encoder_onnx, wordpiece_tokenizer_json

    source = tmp_path / "classifier.onnx"
    source.write_bytes(tiny_encoder_onnx(labels=3))
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text(wordpiece_tokenizer_json())
    names = ("input_ids", "attention_mask", "token_type_ids")
    outcome = run_optimization(
        source,
        method="dynamic-int8",
        signature={"inputs": [{"name": name, "datatype": "INT64", "shape": [-1, -1]} for name in names]},
        task="text-classification",
        example="the striker scored twice in the second half",
        tokenizer=tokenizer,
        workdir=str(tmp_path),
    )
    assert outcome.ok, outcome.reason
    assert outcome.measured["inputs"] == 512  # one top label per text
    assert 0 <= outcome.measured["agreement"] <= 1
    assert outcome.measured["runs"]["original"] == outcome.measured["runs"]["optimized"] > 0


def test_agreement_compares_top_labels_of_scores_or_labels_and_nothing_else():
    import numpy as np

    from marketplace.sandbox.optimize_file import compare

    scores = np.array([[0.1, 0.9], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]], dtype=np.float32)
    moved = np.array([[0.2, 0.8], [0.1, 0.9], [0.4, 0.6], [0.35, 0.65]], dtype=np.float32)
    measured = compare([[scores]], [[moved]], classification=True)
    assert measured["agreement"] == 0.75 and measured["inputs"] == 4
    assert measured["max_abs_diff"] == pytest.approx(0.7)
    labels = compare(
        [[np.array([0, 1, 2]), scores[:3]]], [[np.array([0, 1, 1]), moved[:3]]], classification=True
    )
    assert labels["agreement"] == pytest.approx(2 / 3) and labels["inputs"] == 3
    one_score_each = compare([[scores[:, 0]]], [[moved[:, 0]]], classification=True)
    assert one_score_each["agreement"] is None and one_score_each["inputs"] is None
    assert compare([[scores]], [[moved]], classification=False)["agreement"] is None


# --- the broker ---------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_with_the_broker_down_it_answers_503_and_leaves_no_version_behind(api, publish):
    publish("tiny")
    with broker_down():
        response = optimize(api, "alice/tiny")
    assert response.status_code == 503, response.content[:300]
    assert int(response["Retry-After"]) > 0
    assert list(ModelVersion.objects.values_list("number", flat=True)) == [1]


def test_a_slow_model_is_measured_on_as_many_inputs_as_the_time_allows(tmp_path):
    from marketplace.sandbox.optimize_file import measurement_feeds, new_session, reference_outputs

    source = tmp_path / "tiny.onnx"
    source.write_bytes(onnx_model_bytes())
    feeds = measurement_feeds(TINY_SIGNATURE["inputs"], {"example": None}, 512)
    assert len(feeds) == 8  # batches of 64 rows
    session = new_session(str(source))
    kept, outputs, _ = reference_outputs(session, feeds, budget=60)
    assert len(kept) == len(outputs) == 8
    kept, outputs, _ = reference_outputs(session, feeds, budget=0)  # out of time at once: two feeds still
    assert len(kept) == len(outputs) == 2
