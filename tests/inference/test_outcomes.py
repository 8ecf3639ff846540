"""The outcome table: which ending a pipeline outcome is, and how each protocol answers it."""

from __future__ import annotations

import grpc
import pytest

from inference.protocols.outcomes import GRPC_CODE, HTTP_STATUS, Ending, ending_of, retry_headers
from inference.services import Outcome


@pytest.mark.parametrize(
    ("outcome", "ending"),
    [
        (Outcome(status="succeeded"), Ending.SUCCEEDED),
        (Outcome(status="failed", error="the model failed: boom"), Ending.MODEL_FAILED),
        # A runner's time or memory limit, a crash, a full queue: the pool says it was the server's.
        (Outcome(status="failed", error="more memory", unavailable=True), Ending.UNAVAILABLE),
        (Outcome(status="pending"), Ending.PENDING),
        (Outcome(status="pending", unavailable=True), Ending.UNAVAILABLE),
        (Outcome(status="canceled", error="deadline"), Ending.CANCELED),
    ],
)
def test_each_outcome_has_one_ending(outcome, ending):
    assert ending_of(outcome) is ending


def test_only_503_asks_to_retry_and_no_other_5xx_is_answered():
    assert set(HTTP_STATUS.values()) <= {200, 400, 503}
    assert retry_headers(Ending.UNAVAILABLE) == {"Retry-After": "1"}
    assert retry_headers(Ending.MODEL_FAILED) == {}
    assert GRPC_CODE[Ending.UNAVAILABLE] is grpc.StatusCode.UNAVAILABLE
    assert GRPC_CODE[Ending.MODEL_FAILED] is grpc.StatusCode.INVALID_ARGUMENT
