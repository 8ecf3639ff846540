"""`/v2/…/infer` answered on the event loop: the view's own steps (`inference.protocols.oip`: `infer_read`,
`infer_submit`, `infer_answer`) without Django's request cycle, which cost as much CPU as the rest of a call.

The checks and the admission run in a thread (`endpoints.py`); the wait for a runner pool on this host
(`runners.link`) holds no thread (`services.prediction_wait_async`, which gRPC's server shares); the answer
is encoded on the loop, in the protocol's `{"error"}` shapes for quota refusals and outages as
`inference.protocols.oip_errors` gives them to the view.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

from .. import services
from ..protocols.oip import (
    Answer,
    V2Error,
    infer_answer,
    infer_read,
    infer_submit,
    infer_wait_seconds,
)
from ..protocols.oip_errors import V2ErrorMiddleware, v2_error
from .endpoints import Endpoint, Exchange, answer_of, database_request_ended, header

logger = logging.getLogger(__name__)

_errors = V2ErrorMiddleware(get_response=None)


class InferEndpoint(Endpoint):
    protocol = "v2"

    def too_large(self) -> Answer:
        return answer_of(v2_error(f"The request body is over the limit of {self.body_limit} bytes.", 413))

    async def answer(self, exchange: Exchange, route, body: bytes) -> Answer:
        try:
            call, submission = await exchange.in_thread(self._admit, route.kwargs, exchange.headers, body)
            exchange.user = call.user
            outcome = await services.prediction_wait_async(
                submission=submission, timeout=infer_wait_seconds(), in_thread=exchange.in_thread
            )
            return exchange.run(infer_answer, call, submission, outcome)
        except Exception as exc:  # noqa: BLE001 - every failure is answered in the protocol's shape
            return exchange.run(_error_answer, exchange.scope["path"], exc)

    @staticmethod
    def _admit(kwargs: dict, headers: dict[bytes, bytes], body: bytes):
        try:
            call = infer_read(
                authorization=header(headers, b"authorization") or "",
                owner=kwargs["owner"],
                name=kwargs["name"],
                number=kwargs.get("number"),
                body=body,
                header_length=header(headers, b"inference-header-content-length"),
            )
            return call, infer_submit(call)
        finally:
            database_request_ended()


def _error_answer(path: str, exc: Exception) -> Answer:
    if isinstance(exc, V2Error):
        return answer_of(v2_error(str(exc), exc.status, exc.headers))
    response = _errors.process_exception(SimpleNamespace(path=path), exc)
    if response is None:
        logger.exception("inference failed", exc_info=exc)
        response = v2_error("Server error.", 500)
    return answer_of(response)
