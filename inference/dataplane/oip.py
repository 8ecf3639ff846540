"""`/v2/…/infer` answered on the event loop: the view's own steps (`inference.protocols.oip`: `infer_read`,
`infer_submit`, `infer_answer`) without Django's request cycle, which cost as much CPU as the rest of a call.

The checks and the admission run in a thread (`endpoints.py`); the wait for a runner pool on this host
(`runners.link`) holds no thread; the answer is encoded on the loop, in the protocol's `{"error"}` shapes for
quota refusals and outages as `inference.protocols.oip_errors` gives them to the view.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from types import SimpleNamespace

from .. import services
from ..protocols.oip import (
    Answer,
    InferCall,
    V2Error,
    infer_answer,
    infer_read,
    infer_submit,
    infer_wait_seconds,
)
from ..protocols.oip_errors import V2ErrorMiddleware, v2_error
from ..runners.link import BUSY, LinkLost
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
            outcome = await self._outcome(exchange, call, submission)
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

    @staticmethod
    async def _outcome(exchange: Exchange, call: InferCall, submission: services.Submission):
        if submission.reply is None:  # the Redis queue (another host's pool) or the job path
            return await exchange.in_thread(
                functools.partial(
                    services.prediction_wait,
                    submission=submission,
                    timeout=infer_wait_seconds(),
                    fall_back_to_job=False,
                    user=call.user,
                    api_key=call.key,
                )
            )
        reply = asyncio.wrap_future(submission.reply)
        done, _ = await asyncio.wait({reply}, timeout=infer_wait_seconds())
        if not done:
            return await exchange.in_thread(services.link_gave_up, submission, False)
        try:
            answer, outputs = reply.result()
        except LinkLost as exc:
            return await exchange.in_thread(services.link_lost, submission, exc)
        if answer["status"] == BUSY:
            return await exchange.in_thread(services.link_refused, submission, answer["depth"])
        return services.link_outcome(submission, answer, outputs)


def _error_answer(path: str, exc: Exception) -> Answer:
    if isinstance(exc, V2Error):
        return answer_of(v2_error(str(exc), exc.status, exc.headers))
    response = _errors.process_exception(SimpleNamespace(path=path), exc)
    if response is None:
        logger.exception("inference failed", exc_info=exc)
        response = v2_error("Server error.", 500)
    return answer_of(response)
