"""One generative call, from admission to its ledger record.

    count the prompt's tokens (the host) → check prompt + max_tokens against the context → reserve the tokens
    and count the request (quotas) → generate, piece by piece → one Prediction with its usage; give back the
    tokens not used

`Generation.close()` ends a call exactly once, whether it finished, failed, or its client went away: a
stream cut short is recorded (status `canceled`) with the tokens produced until then.
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.utils import timezone

from inference import ledger
from inference.models import Prediction
from inference.scheduling.queue import RequestHeader
from marketplace import files
from marketplace.models import ModelVersion
from portal import metrics
from portal.logs import request_note
from portal.quotas import TokenReservation, admit_prediction, tokens_reserve, tokens_settle

from . import hosts
from .protocol import HostGone, LineReader, line_encode

logger = logging.getLogger(__name__)


class GenerationRefused(ValueError):
    """The request cannot run on this model as asked (a 400 naming why); `param` names the field."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code


class GenerationUnavailable(RuntimeError):
    """The model's host could not be started or reached (a 503: the call can be retried)."""


@dataclass
class GenerationRequest:
    """A checked request: `body` holds only allowlisted fields, in the engine's terms."""

    kind: str  # "chat" or "completion"
    body: dict
    max_tokens: int | None
    source: str = Prediction.Source.API


@dataclass
class Generation:
    id: str
    target: object  # inference.services.Target
    header: RequestHeader
    connection: socket.socket
    reader: LineReader
    prompt_tokens: int
    max_tokens: int
    reservation: TokenReservation
    started: float
    started_at: datetime
    completion_tokens: int = 0
    finish_reason: str | None = None
    error: str = ""
    first_piece_at: float | None = None
    last_piece_at: float | None = None
    hung_up: bool = False  # the caller went away (`hang_up`)
    _closed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def hang_up(self) -> None:
        """The caller went away: the host hears so at once (a call waiting for a slot leaves the queue, a
        running one stops), and the thread reading the host's answer stops reading; recorded as canceled."""
        self.hung_up = True
        _hang_up(self.connection, threading.Event())

    def pieces(self):
        """The text pieces as the model produces them; then `finish_reason` and `completion_tokens` are set.
        Raises GenerationUnavailable when the host fails mid-way (the call is recorded as failed)."""
        while True:
            try:
                message = self.reader.read()
            except HostGone as exc:
                if self.hung_up:
                    raise GenerationUnavailable("The client closed the connection.") from None
                self.error = f"The model's host stopped during generation ({exc})."
                raise GenerationUnavailable(self.error) from None
            if "text" in message:
                text, count = message.get("text"), message.get("n")
                if isinstance(count, int) and 0 <= count <= self.max_tokens:
                    self.completion_tokens = max(self.completion_tokens, count)
                if isinstance(text, str) and text:
                    self.last_piece_at = time.monotonic()
                    if self.first_piece_at is None:
                        self.first_piece_at = self.last_piece_at
                    yield text
                continue
            end = message.get("end")
            if isinstance(end, dict):
                count = end.get("completion_tokens")
                if isinstance(count, int) and 0 <= count <= self.max_tokens:
                    self.completion_tokens = count
                reason = end.get("finish_reason")
                self.finish_reason = "length" if reason == "length" else "stop"
                return
            error = message.get("error") if isinstance(message.get("error"), dict) else {}
            self.error = str(error.get("message", "The model failed."))[:2000]
            raise GenerationUnavailable(self.error)

    def text(self) -> str:
        return "".join(self.pieces())

    @property
    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def close(self) -> None:
        """Record the call once: succeeded when it finished, failed on an error, canceled when its caller
        stopped reading; then give back the reserved tokens it did not use."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.connection.close()  # a sequence still running stops at its next piece
        if self.finish_reason is not None:
            status, error = Prediction.Status.SUCCEEDED, ""
        elif self.error:
            status, error = Prediction.Status.FAILED, self.error
        else:
            status, error = Prediction.Status.CANCELED, "The client closed the connection."
        elapsed_ms = (time.monotonic() - self.started) * 1000
        try:
            ledger.finish(
                [
                    ledger.Ended(
                        id=self.id,
                        status=status,
                        model_id=self.target.model_id,
                        header=self.header,
                        error=error,
                        started_at=self.started_at,
                        finished_at=timezone.now(),
                        queue_ms=0.0,
                        compute_ms=elapsed_ms,
                        prompt_tokens=self.prompt_tokens,
                        completion_tokens=self.completion_tokens,
                    )
                ]
            )
        finally:
            tokens_settle(self.reservation, used=self.prompt_tokens + self.completion_tokens)
            self.observe()

    def observe(self) -> None:
        """Time to first token and decode rate, as Prometheus histograms (portal.metrics), and the tokens."""
        model = metrics.model_label(self.target.slug)
        metrics.generated_tokens_total.labels(model, "prompt").inc(self.prompt_tokens)
        metrics.generated_tokens_total.labels(model, "completion").inc(self.completion_tokens)
        if self.first_piece_at is None:
            return
        metrics.time_to_first_token.labels(model).observe(self.first_piece_at - self.started)
        decoding = (self.last_piece_at or self.first_piece_at) - self.first_piece_at
        if self.completion_tokens > 1 and decoding > 0:
            metrics.tokens_per_second.labels(model).observe((self.completion_tokens - 1) / decoding)


_contexts: dict[int, int] = {}


def context_length_of(version_id: int) -> int:
    """The model's trained context, from its version's header summary (immutable, so cached for good)."""
    if version_id not in _contexts:
        llm = ModelVersion.objects.filter(id=version_id).values_list("llm", flat=True).first() or {}
        _contexts[version_id] = int(llm.get("context_length") or 0)
    return _contexts[version_id]


def generation_start(*, user, api_key, target, request: GenerationRequest, on_hangup=None) -> Generation:
    """Admit one generative call and start it. Raises GenerationRefused (400), QuotaExceeded (429, nothing
    reserved or counted) or GenerationUnavailable (503).

    `on_hangup(action)`, when the server can tell that the caller went away, runs `action` then: a call still
    waiting for a slot leaves the host's queue, uncounted; a running one stops (`Generation.hang_up`)."""
    began = time.monotonic()
    left = threading.Event()
    try:
        path = files.local_copy(name=target.file_name, sha256=target.sha256, key=target.file_key)
    except files.FileUnavailable as exc:
        raise GenerationUnavailable(f"The model's file is not available ({exc}).") from None
    spec = hosts.spec_for(
        sha256=target.sha256, path=str(path), context_length=context_length_of(target.version_id)
    )
    for attempt in range(2):
        # A host that stopped when idle may have accepted this connection as it went: once more, anew.
        try:
            connection = hosts.connect(spec, timeout=60)
        except (hosts.HostUnavailable, OSError) as exc:
            raise GenerationUnavailable(str(exc)) from None
        reader = LineReader(connection)
        if on_hangup is not None:
            on_hangup(functools.partial(_hang_up, connection, left))
        try:
            # The user takes turns at the model's slots with the other users of its host (llm/fairness.py).
            count = {"op": "count", "kind": request.kind, "body": request.body, "user": str(user.id)}
            connection.sendall(line_encode(count))
            counted = reader.read()
            break
        except (HostGone, OSError):
            connection.close()
            if left.is_set():
                raise GenerationUnavailable("The client closed the connection.") from None
            if attempt:
                raise GenerationUnavailable("The model's host did not answer; retry.") from None
    try:
        prompt_tokens, max_tokens = _tokens_of(counted, request, spec.context)
        started_at = timezone.now()
        reservation = tokens_reserve(user=user, tokens=prompt_tokens + max_tokens)
        try:
            admit_prediction(user=user, api_key=api_key)
        except BaseException:
            tokens_settle(reservation, used=0)
            raise
        call_id = str(uuid.uuid4())
        request_note(prediction=call_id)
        body = dict(request.body, max_tokens=max_tokens)
        try:
            connection.sendall(line_encode({"op": "generate", "kind": request.kind, "body": body}))
        except OSError:
            if not left.is_set():
                raise
            # The caller left as it was admitted: the call is recorded (canceled) like any admitted one.
    except BaseException:
        connection.close()
        raise
    header = RequestHeader(
        id=call_id,
        user_id=user.id,
        api_key_id=getattr(api_key, "id", None),
        source=request.source,
        bytes_in=0,
        created_at=started_at.astimezone(UTC).timestamp(),
        model_id=target.model_id,
        version_id=target.version_id,
        sha256=target.sha256,
        format=target.format,
        file_name=target.file_name,
        size=target.size,
        inputs=[],
        outputs=[],
        batchable=False,
        model=target.slug,
    )
    generation = Generation(
        id=call_id,
        target=target,
        header=header,
        connection=connection,
        reader=reader,
        prompt_tokens=prompt_tokens,
        max_tokens=max_tokens,
        reservation=reservation,
        started=began,
        started_at=started_at,
    )
    if left.is_set():  # gone while the call was admitted: it stops at once, recorded as canceled
        generation.hang_up()
    elif on_hangup is not None:
        on_hangup(generation.hang_up)
    return generation


def _hang_up(connection: socket.socket, left: threading.Event) -> None:
    left.set()
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:  # closed already
        pass


def _tokens_of(counted: dict, request: GenerationRequest, context: int) -> tuple[int, int]:
    """The prompt's tokens (as the host counted them) and the call's max_tokens, checked against the
    context of a slot."""
    error = counted.get("error")
    if isinstance(error, dict):
        message = str(error.get("message", ""))[:500]
        if error.get("kind") == "context":
            raise GenerationRefused(
                f"The prompt is longer than the model's context ({context} tokens).",
                param="messages" if request.kind == "chat" else "prompt",
                code="context_length_exceeded",
            )
        if error.get("kind") == "request":
            raise GenerationRefused(f"The model refused the request: {message}")
        if error.get("kind") == "busy":
            raise GenerationUnavailable(f"The model is busy ({message}); retry in a few seconds.")
        raise GenerationUnavailable(f"The model failed: {message}")
    prompt_tokens = counted.get("prompt_tokens")
    if not isinstance(prompt_tokens, int) or not 0 <= prompt_tokens <= context:
        raise GenerationUnavailable("The model's host gave no prompt length.")
    room = context - prompt_tokens
    if request.max_tokens is None:
        default = int(hosts.llm_setting("LLM_DEFAULT_MAX_TOKENS", 512))
        if room < 1:
            raise GenerationRefused(
                f"The prompt ({prompt_tokens} tokens) fills the model's context ({context} tokens).",
                param="messages" if request.kind == "chat" else "prompt",
                code="context_length_exceeded",
            )
        return prompt_tokens, min(default, room)
    if request.max_tokens > room:
        raise GenerationRefused(
            f"The prompt ({prompt_tokens} tokens) plus max_tokens ({request.max_tokens}) is longer than the "
            f"model's context ({context} tokens).",
            param="max_tokens",
            code="context_length_exceeded",
        )
    return prompt_tokens, request.max_tokens
