"""How a prediction's ending is answered, written once for every protocol.

- succeeded (the model answered): /api/v1 200 with the prediction; /v2 200; gRPC OK; OpenAI 200.
- model failed (it raised on these inputs, or answered more than INFERENCE_MAX_OUTPUT_MB): /api/v1 200
  with the prediction, `status: failed` and its `error`; /v2 400; gRPC INVALID_ARGUMENT; OpenAI 400
  `invalid_request_error`.
- unavailable (no runner answered: its time or memory limit, a crash, the model's queue full, the runner
  pool gone, Redis down): 503 with Retry-After everywhere; gRPC UNAVAILABLE with `retry-after`; OpenAI
  `service_unavailable`.
- pending (not done within the wait): /api/v1 202 with the prediction's URL (it goes on as a job); a
  protocol with nothing to come back to answers as unavailable.
- canceled (the caller's deadline passed first): gRPC DEADLINE_EXCEEDED.

Why: API.md allows no 5xx but 503, which says "retry". A runner killed at its memory or time limit is
503 like a crash, not the caller's bad input: calls are batched, so a batch's memory or time is not one
caller's doing, and the same call alone may well pass. What only the model can fix (it raised, or its answer
is over INFERENCE_MAX_OUTPUT_MB) is a 400 as in Triton; `/api/v1` answers with the prediction itself, its
status `failed`, as Replicate does. Which limit stopped a runner is the pool's to say (`Result.server_fault`);
whether the caller is charged is the ledger's (only a succeeded prediction costs compute; a refused or
abandoned one is refunded where it is decided: `services.link_refused`, `services.prediction_abandon`).
"""

from __future__ import annotations

import enum

import grpc

from ..models import Prediction

# Seconds a 503 asks the caller to wait: runners free up within a call's time.
RETRY_AFTER_SECONDS = 1


class Ending(enum.Enum):
    SUCCEEDED = "succeeded"
    MODEL_FAILED = "failed"
    UNAVAILABLE = "unavailable"
    PENDING = "pending"
    CANCELED = "canceled"


def ending_of(outcome) -> Ending:
    """The ending of a `services.Outcome`."""
    if outcome.status == Prediction.Status.SUCCEEDED:
        return Ending.SUCCEEDED
    if outcome.status == Prediction.Status.CANCELED:
        return Ending.CANCELED
    if outcome.status == "pending":
        return Ending.UNAVAILABLE if outcome.unavailable else Ending.PENDING
    return Ending.UNAVAILABLE if outcome.unavailable else Ending.MODEL_FAILED


HTTP_STATUS = {
    Ending.SUCCEEDED: 200,
    Ending.MODEL_FAILED: 400,
    Ending.UNAVAILABLE: 503,
    Ending.PENDING: 503,  # for a protocol with nothing to come back to; /api/v1 answers 202
}
GRPC_CODE = {
    Ending.SUCCEEDED: grpc.StatusCode.OK,
    Ending.MODEL_FAILED: grpc.StatusCode.INVALID_ARGUMENT,
    Ending.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Ending.PENDING: grpc.StatusCode.UNAVAILABLE,
    Ending.CANCELED: grpc.StatusCode.DEADLINE_EXCEEDED,
}
OPENAI_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def retry_headers(ending: Ending) -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)} if HTTP_STATUS.get(ending) == 503 else {}


def message_of(outcome) -> str:
    """What the caller reads of an ending other than success."""
    if outcome.error:
        return outcome.error
    if ending_of(outcome) in (Ending.UNAVAILABLE, Ending.PENDING):
        return "No worker answered in time; retry later."
    return f"The prediction {outcome.status}."
