"""The upload check's trial run: valid models that synthetic inputs cannot run are published with a note, an
uploader's `example` must run, and operator domains come from the runtime."""

from __future__ import annotations

import json

import pytest

from marketplace import services
from marketplace.models import ModelVersion

from .conftest import upload_file

pytestmark = pytest.mark.django_db(transaction=True)


def onnx_bytes(nodes, inputs, outputs, *, initializers=(), opsets=(("", 17),)) -> bytes:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "trial", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def integer_division() -> bytes:
    from onnx import TensorProto, helper

    return onnx_bytes(
        [helper.make_node("Div", ["a", "b"], ["q"])],
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, ["n", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["n", 3]),
        ],
        [helper.make_tensor_value_info("q", TensorProto.INT64, ["n", 3])],
    )


def reshape_by_input() -> bytes:
    """Seven values reshaped to the shape an input gives, then added to a [1, 7] row: only a shape that
    makes one row of seven runs, which no synthetic input gives."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    row = numpy_helper.from_array(np.arange(7, dtype=np.float32).reshape(1, 7), "row")
    return onnx_bytes(
        [
            helper.make_node("Reshape", ["x", "shape"], ["reshaped"]),
            helper.make_node("Add", ["reshaped", "row"], ["y"]),
        ],
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [7]),
            helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 7])],
        initializers=[row],
    )


def validated(owner, content: bytes, *, example=None, name: str = "m") -> ModelVersion:
    stored = services.store_upload(file=upload_file(content), limit=1 << 30)
    version = services.model_create(owner=owner, name=name, stored=stored, example=example)
    return services.version_publish(version=version, inline=True)


def test_integer_division_is_not_refused_for_dividing_zeros_by_zero(alice):
    version = validated(alice, integer_division())
    assert version.status == ModelVersion.Status.READY, version.reason
    assert version.reason == ""
    assert [i["datatype"] for i in version.signature["inputs"]] == ["INT64", "INT64"]


def test_a_model_no_synthetic_input_runs_is_ready_with_a_note(alice):
    version = validated(alice, reshape_by_input())
    assert version.status == ModelVersion.Status.READY
    assert version.reason.startswith("trial run skipped: ")
    assert "give an `example` to check it" in version.reason
    assert "reshape" in version.reason.lower()


def test_a_given_example_that_runs_publishes_the_model_without_a_note(alice):
    example = {"x": [0, 1, 2, 3, 4, 5, 6], "shape": [1, 7]}
    version = validated(alice, reshape_by_input(), example=example)
    assert version.status == ModelVersion.Status.READY, version.reason
    assert version.reason == ""
    version.refresh_from_db()
    assert version.example_inputs == example


def test_an_example_in_the_oip_form_is_used_too(alice):
    example = [
        {"name": "x", "datatype": "FP32", "shape": [7], "data": [0, 1, 2, 3, 4, 5, 6]},
        {"name": "shape", "datatype": "INT64", "shape": [2], "data": [1, -1]},
    ]
    version = validated(alice, reshape_by_input(), example=example)
    assert version.status == ModelVersion.Status.READY, version.reason
    assert version.reason == ""


def test_it_rejects_an_upload_whose_example_fails_with_the_runtimes_message(api, celery_worker_process):
    example = {"x": [0, 1, 2, 3, 4, 5, 6], "shape": [7, 7]}
    response = api.post(
        "/api/v1/models",
        {"name": "reshaper", "file": upload_file(reshape_by_input()), "example": json.dumps(example)},
        format="multipart",
    )
    assert response.status_code == 415, response.content
    detail = response.json()["detail"]
    assert "failed on the given example" in detail
    assert "reshape" in detail.lower()  # ONNX Runtime's own words about the Reshape node


def test_it_rejects_an_example_that_does_not_fit_the_inputs(api, celery_worker_process):
    response = api.post(
        "/api/v1/models",
        {"name": "reshaper", "file": upload_file(reshape_by_input()), "example": '{"nope": [1]}'},
        format="multipart",
    )
    assert response.status_code == 415, response.content
    assert "`example` does not fit" in response.json()["detail"]
    assert "nope" in response.json()["detail"]


def test_it_rejects_an_example_that_is_not_json(api):
    response = api.post(
        "/api/v1/models",
        {"name": "reshaper", "file": upload_file(reshape_by_input()), "example": "{x: 1"},
        format="multipart",
    )
    assert response.status_code == 400
    assert "example" in response.json()


def test_the_example_and_the_note_are_shown_on_the_version_and_the_page(
    api, alice_client, celery_worker_process
):
    example = {"x": [0.5, 1, 2, 3, 4, 5, 6], "shape": [1, 7]}
    response = api.post(
        "/api/v1/models",
        {"name": "reshaper", "file": upload_file(reshape_by_input()), "example": json.dumps(example)},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    detail = api.get("/api/v1/models/alice/reshaper/versions/1").json()
    assert detail["example"] == example
    assert detail["reason"] == ""
    page = alice_client.get("/models/alice/reshaper/").content.decode()
    assert "data-example=" in page
    assert "[0.5, 1, 2, 3, 4, 5, 6]" in page  # the widget starts from the uploader's example

    # A new version without an example: ready, with the note in the API and on the page.
    response = api.post(
        "/api/v1/models/alice/reshaper/versions",
        {"file": upload_file(reshape_by_input())},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["reason"].startswith("trial run skipped: ")
    assert response.json()["example"] is None
    page = alice_client.get("/models/alice/reshaper/").content.decode()
    assert "trial run skipped" in page
    assert "give an <code>example</code>" in page or "give an `example`" in page


def test_the_web_upload_form_takes_an_example(alice_client, celery_worker_process):
    example = {"x": [0, 1, 2, 3, 4, 5, 6], "shape": [1, 7]}
    response = alice_client.post(
        "/models/new/",
        {
            "name": "from-form",
            "task": "other",
            "visibility": "public",
            "file": upload_file(reshape_by_input()),
            "example": json.dumps(example),
        },
    )
    assert response.status_code == 302, response.content.decode()[-2000:]
    version = ModelVersion.objects.get(model__name="from-form")
    assert version.status == ModelVersion.Status.READY
    assert version.example_inputs == example


def test_a_model_importing_the_onnx_preview_domain_is_accepted(alice):
    from onnx import TensorProto, helper

    content = onnx_bytes(
        [helper.make_node("Relu", ["x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        opsets=(("", 21), ("ai.onnx.preview", 1)),
    )
    version = validated(alice, content)
    assert version.status == ModelVersion.Status.READY, version.reason
