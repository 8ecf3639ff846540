"""How a prediction ends, and how every protocol answers each ending: the one table.

| kind        | /api/v1 predict                  | /v2 | gRPC             | OpenAI /v1 | quota       |
| ----------- | -------------------------------- | --- | ---------------- | ---------- | ----------- |
| succeeded   | 200, the prediction              | 200 | OK               | 200        | counted     |
| invalid     | 400                              | 400 | INVALID_ARGUMENT | 400        | not counted |
| model_error | 200, the prediction (`failed`)   | 400 | INVALID_ARGUMENT | 400        | counted     |
| over_limits | 503 + Retry-After                | 503 | UNAVAILABLE      | 503        | counted     |
| unavailable | 503 + Retry-After                | 503 | UNAVAILABLE      | 503        | given back  |
| pending     | 202, the prediction's URL        | -   | -                | -          | counted     |
| canceled    | 200, the prediction (`canceled`) | 409 | CANCELLED        | 409        | given back  |

- succeeded: the model answered.
- invalid: the request does not fit the model (input names, shapes, datatypes, values); found before the call
  is admitted, so nothing is counted.
- model_error: the model raised on these inputs, or its answer is over INFERENCE_MAX_OUTPUT_MB.
- over_limits: its runner was killed at the memory or the time limit, or crashed.
- unavailable: no runner answered: the model's queue was full, no worker took it in time, the runner pool or
  Redis went away, the model's file was out of reach.
- pending: not done within the caller's wait (/api/v1 only: the call goes on as a job).
- canceled: its owner canceled it, or its caller left first (a gRPC deadline or cancel).

gRPC's 503s carry `retry-after` trailing metadata; a call whose client deadline passed is DEADLINE_EXCEEDED,
as the client itself reports it. A protocol with nothing to come back to never leaves a call `pending`: the
pipeline gives it up, as `unavailable`. "Quota" is the caller's request windows (requests per minute and per
day): what admission counted is kept, or given back by the process that answers the caller, which holds the
admission (a job left to run after a 202, which a worker ends, stays counted however it ends).

Why. API.md allows no 5xx but 503, which says "retry", and Triton and KServe users read a 400 /
INVALID_ARGUMENT as "this request will never work as sent", a 503 / UNAVAILABLE as "the server could not now".
- What only the model can be blamed for on these inputs (it raised) is a 400 as in Triton; `/api/v1` answers
  with the prediction itself, its status `failed` and its `error`, as Replicate does: the prediction ran.
- A runner stopped at its memory or time limit, or one that crashed, is not the caller's bad input: its
  message names the limit, and it is a 503 like every server-side failure (Triton answers these INTERNAL,
  a 5xx API.md does not allow). Calls are batched, so a batch's memory or time is not one caller's doing,
  and the same call alone, or later, may pass. It still counts in the caller's quota: it held a runner up
  to the limit, and a caller must not be able to do that again and again for free.
- `unavailable` was not served: its quota is given back, as a refusal is not a use.
- `canceled` costs nothing either: the caller did not get, or no longer wanted, the answer. Over HTTP a
  canceled call has nobody listening but the rare caller waiting on a job its owner canceled: 409, the
  prediction's state, not a retry.
- Compute is charged for succeeded predictions only, whatever the kind (the usage ledger, `portal.usage`).

The kind of a failure travels with it as data, never parsed from its message: the runner pool names it
(`scheduling.scheduler.Result.kind`), the supervisor's reply and record carry it, and the ledger keeps it
(`Prediction.failure`) for the calls answered from their record (jobs). This module imports nothing heavy: the
supervisor and the recorder use its names too.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# Seconds a 503 asks the caller to wait: runners free up within a call's time.
RETRY_AFTER_SECONDS = 1


class Kind(enum.StrEnum):
    """How a prediction ended; the value is also the `outcome` of its request's log line and metrics."""

    SUCCEEDED = "succeeded"
    INVALID_INPUT = "invalid"
    MODEL_ERROR = "model_error"
    OVER_LIMITS = "over_limits"
    UNAVAILABLE = "unavailable"
    PENDING = "pending"
    CANCELED = "canceled"

    @property
    def answer(self) -> Answer:
        return TABLE[self]

    @property
    def status(self) -> str:
        """The prediction's status (`Prediction.Status`), or `pending`."""
        return STATUS_OF.get(self, "failed")


@dataclass(frozen=True)
class Answer:
    rest: int  # /api/v1 predict: 200 is the prediction itself (its status, its error), 202 its URL
    v2: int
    grpc: str  # a grpc.StatusCode name (grpc is not imported here)
    openai: int  # the status of OpenAI's /v1; its error type is OPENAI_ERROR_TYPES[status]
    counted: bool  # it counts in the caller's request quota (what admission counted is kept)

    @property
    def retry(self) -> bool:
        return self.v2 == 503


TABLE = {
    Kind.SUCCEEDED: Answer(rest=200, v2=200, grpc="OK", openai=200, counted=True),
    Kind.INVALID_INPUT: Answer(rest=400, v2=400, grpc="INVALID_ARGUMENT", openai=400, counted=False),
    Kind.MODEL_ERROR: Answer(rest=200, v2=400, grpc="INVALID_ARGUMENT", openai=400, counted=True),
    Kind.OVER_LIMITS: Answer(rest=503, v2=503, grpc="UNAVAILABLE", openai=503, counted=True),
    Kind.UNAVAILABLE: Answer(rest=503, v2=503, grpc="UNAVAILABLE", openai=503, counted=False),
    # Only /api/v1 leaves a call pending; the others' rows are what the pipeline gives it up as.
    Kind.PENDING: Answer(rest=202, v2=503, grpc="UNAVAILABLE", openai=503, counted=True),
    Kind.CANCELED: Answer(rest=200, v2=409, grpc="CANCELLED", openai=409, counted=False),
}
STATUS_OF = {Kind.SUCCEEDED: "succeeded", Kind.CANCELED: "canceled", Kind.PENDING: "pending"}
# The kinds a failed prediction's record keeps (`Prediction.failure`).
FAILURES = (Kind.MODEL_ERROR, Kind.OVER_LIMITS, Kind.UNAVAILABLE)

# OpenAI's error `type` by status, for every error of its /v1 (outcomes and refusals alike).
OPENAI_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


def failure_kind(value: str | None) -> Kind:
    """The kind of a failed prediction from its reply or record: a model error unless it says otherwise (a
    record written before kinds were kept says nothing)."""
    try:
        kind = Kind(value) if value else Kind.MODEL_ERROR
    except ValueError:
        return Kind.MODEL_ERROR
    return kind if kind in FAILURES else Kind.MODEL_ERROR


def retry_headers(kind: Kind, seconds: int = RETRY_AFTER_SECONDS) -> dict[str, str]:
    """Retry-After for the kinds answered 503 (a gRPC call sends it as `retry-after` trailing metadata)."""
    return {"Retry-After": str(seconds)} if kind.answer.retry else {}


def message_of(outcome) -> str:
    """What the caller reads of an ending other than success (a `services.Outcome`)."""
    if outcome.error:
        return outcome.error
    if outcome.kind in (Kind.UNAVAILABLE, Kind.PENDING):
        return "No worker answered in time; retry later."
    return f"The prediction {outcome.kind.status}."
