"""The ONNX structure check walks a model's local functions as it walks its graph: external data, an unknown
operator domain or a tensor that lies about its size is refused wherever it hides."""

from __future__ import annotations

import pytest
from onnx import TensorProto, helper

from marketplace.models import Model
from marketplace.sandbox.archives import Rejected
from marketplace.sandbox.inspect_file import check_onnx_structure

from .conftest import upload_file

LOCAL = "local.functions"


def external_tensor(name: str = "w") -> TensorProto:
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="/etc/hostname")
    return tensor


def model_calling(function_nodes, *, function_opsets=()):
    """y = AddOne(x), AddOne a local function made of `function_nodes` (input `a`, output `b`)."""
    function = helper.make_function(
        LOCAL,
        "AddOne",
        ["a"],
        ["b"],
        function_nodes,
        [helper.make_opsetid("", 17), *function_opsets],
    )
    graph = helper.make_graph(
        [helper.make_node("AddOne", ["x"], ["y"], domain=LOCAL)],
        "calls-a-function",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1])],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(LOCAL, 1)],
        functions=[function],
    )
    model.ir_version = 8
    return model


def constant(name: str, tensor: TensorProto):
    return helper.make_node("Constant", [], [name], value=tensor)


def harmless_model():
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    return model_calling([constant("one", one), helper.make_node("Add", ["a", "one"], ["b"])])


def external_data_in_a_function():
    return model_calling([constant("w", external_tensor()), helper.make_node("Add", ["a", "w"], ["b"])])


def unknown_domain_in_a_function():
    return model_calling(
        [helper.make_node("Detonate", ["a"], ["b"], domain="evil.example")],
        function_opsets=[helper.make_opsetid("evil.example", 1)],
    )


def external_data_in_a_subgraph_of_a_function():
    then_branch = helper.make_graph(
        [constant("w", external_tensor()), helper.make_node("Identity", ["w"], ["t"])],
        "then",
        [],
        [helper.make_tensor_value_info("t", TensorProto.FLOAT, [1])],
    )
    else_branch = helper.make_graph(
        [
            constant("z", helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])),
            helper.make_node("Identity", ["z"], ["e"]),
        ],
        "else",
        [],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, [1])],
    )
    flag = helper.make_tensor("flag", TensorProto.BOOL, [], [True])
    return model_calling(
        [
            constant("flag", flag),
            helper.make_node("If", ["flag"], ["w"], then_branch=then_branch, else_branch=else_branch),
            helper.make_node("Add", ["a", "w"], ["b"]),
        ]
    )


def lying_tensor_in_a_function():
    tensor = helper.make_tensor("w", TensorProto.FLOAT, [1], [0.0])
    del tensor.dims[:]
    tensor.dims.extend([1 << 31, 1 << 31])
    return model_calling([constant("w", tensor), helper.make_node("Add", ["a", "w"], ["b"])])


HIDDEN_IN_FUNCTIONS = {
    "external data in a function's Constant": (external_data_in_a_function, "external data"),
    "an unknown domain in a function's node": (unknown_domain_in_a_function, "evil.example"),
    "external data in an If inside a function": (external_data_in_a_subgraph_of_a_function, "external data"),
    "a tensor claiming 2^62 elements in a function": (lying_tensor_in_a_function, "elements"),
}


@pytest.mark.parametrize("case", list(HIDDEN_IN_FUNCTIONS))
def test_it_refuses_what_hides_in_a_local_function(case):
    build, phrase = HIDDEN_IN_FUNCTIONS[case]
    with pytest.raises(Rejected, match=phrase):
        check_onnx_structure(build())


def test_it_accepts_a_model_with_a_harmless_local_function():
    check_onnx_structure(harmless_model())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "case", ["external data in a function's Constant", "an unknown domain in a function's node"]
)
def test_the_upload_api_refuses_them_with_415(case, api, celery_worker_process):
    build, phrase = HIDDEN_IN_FUNCTIONS[case]
    content = build().SerializeToString()
    response = api.post(
        "/api/v1/models",
        {"name": "functions", "file": upload_file(content, "model.onnx")},
        format="multipart",
    )
    assert response.status_code == 415, response.content
    assert phrase in response.json()["detail"]
    assert not Model.objects.filter(name="functions").exists()


@pytest.mark.django_db(transaction=True)
def test_the_upload_api_accepts_a_model_with_a_harmless_local_function(api, celery_worker_process):
    content = harmless_model().SerializeToString()
    response = api.post(
        "/api/v1/models",
        {"name": "functions", "file": upload_file(content, "model.onnx")},
        format="multipart",
    )
    assert response.status_code == 201, response.content
