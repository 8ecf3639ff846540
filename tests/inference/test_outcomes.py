"""The outcome table (inference.outcomes): an answer per kind of ending and protocol, within API.md."""

from __future__ import annotations

import grpc
import pytest

from inference.outcomes import OPENAI_ERROR_TYPES, TABLE, Kind, failure_kind, retry_headers
from inference.runners.supervisor import reply_header
from inference.scheduling.scheduler import Result

# API.md: gRPC answers with these, and DEADLINE_EXCEEDED / CANCELLED for the client's own deadline or cancel.
GRPC_CODES = {
    "OK",
    "UNAUTHENTICATED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "INVALID_ARGUMENT",
    "RESOURCE_EXHAUSTED",
    "UNAVAILABLE",
    "CANCELLED",
}


def test_every_kind_has_an_answer_on_every_protocol():
    assert set(TABLE) == set(Kind)
    for kind in Kind:
        answer = kind.answer
        assert answer.grpc in GRPC_CODES and hasattr(grpc.StatusCode, answer.grpc), kind
        assert answer.openai == 200 or answer.openai in OPENAI_ERROR_TYPES, kind


def test_no_5xx_but_503_and_every_503_asks_to_retry():
    for kind in Kind:
        answer = kind.answer
        statuses = {answer.rest, answer.v2, answer.openai}
        assert all(status < 500 or status == 503 for status in statuses), kind
        assert (answer.v2 == 503) == (answer.grpc == "UNAVAILABLE"), kind
        assert retry_headers(kind) == ({"Retry-After": "1"} if answer.retry else {}), kind


def test_a_runner_stopped_at_a_limit_is_the_servers_503_not_the_callers_bad_input():
    over = Kind.OVER_LIMITS.answer
    assert (over.rest, over.v2, over.grpc, over.openai) == (503, 503, "UNAVAILABLE", 503)
    invalid = Kind.INVALID_INPUT.answer
    assert (invalid.v2, invalid.grpc) == (400, "INVALID_ARGUMENT")
    assert over.counted  # it held a runner up to the limit


def test_a_model_error_is_the_prediction_on_api_v1_and_a_400_elsewhere():
    model_error = Kind.MODEL_ERROR.answer
    assert (model_error.rest, model_error.v2, model_error.grpc, model_error.openai) == (
        200,
        400,
        "INVALID_ARGUMENT",
        400,
    )
    assert Kind.MODEL_ERROR.status == "failed"


def test_only_what_was_not_served_is_given_back():
    assert {kind for kind in Kind if not kind.answer.counted} == {
        Kind.INVALID_INPUT,
        Kind.UNAVAILABLE,
        Kind.CANCELED,
    }


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        (Result(error="the model failed: boom"), Kind.MODEL_ERROR),
        (Result(error="The model exceeded its memory limit", kind=Kind.OVER_LIMITS), Kind.OVER_LIMITS),
        (Result(error="The model's file is not available", kind=Kind.UNAVAILABLE), Kind.UNAVAILABLE),
    ],
)
def test_a_failures_kind_travels_as_data_from_the_pool_to_the_web(result, kind):
    reply = reply_header(result)
    assert reply["status"] == "failed" and failure_kind(reply["kind"]) is kind


def test_a_failure_that_names_no_kind_is_the_models_error():
    assert failure_kind("") is Kind.MODEL_ERROR  # a record from before kinds were kept
    assert failure_kind("succeeded") is Kind.MODEL_ERROR  # not a failure's kind
