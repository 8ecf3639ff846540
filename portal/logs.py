"""Logs: one line per request and per finished prediction, plain or JSON (`LOG_FORMAT=json`).

Each request gets an id (the caller's `X-Request-ID` when it is a sane token, else a new one), returned as
`X-Request-ID` and carried by its log line with the model, the key's public prefix, the status and timings.
The pipeline adds what it learns on the way (`request_note`). Never logged: a key (only its prefix), a
password, a body or a tensor.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field

from . import metrics

logger = logging.getLogger("modelport.requests")

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# The routes that run a model, by the protocol they speak (the gRPC server reports its own as "grpc").
PREDICT_ROUTES = {
    "model-predict": "v1",
    "v2-model-infer": "v2",
    "v2-version-infer": "v2",
}
# Standard attributes of a LogRecord: anything else on a record is a field of the line.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


@dataclass
class RequestRecord:
    id: str
    started: float = field(default_factory=time.monotonic)
    fields: dict = field(default_factory=dict)


current_request: contextvars.ContextVar[RequestRecord | None] = contextvars.ContextVar(
    "modelport_request_record", default=None
)


def request_note(**fields) -> None:
    """Add fields (model, version, prediction, status…) to the current request's log line, if there is one."""
    record = current_request.get()
    if record is not None:
        record.fields.update(fields)


def request_id_from(header: str | None) -> str:
    if header and _SANE_REQUEST_ID.match(header):
        return header
    return uuid.uuid4().hex


def key_prefix_of(authorization: str) -> str | None:
    """The public prefix of a bearer key (`mp_<prefix>_<secret>`), never the secret part."""
    from .models import ApiKey

    scheme, _, raw = authorization.partition(" ")
    if scheme.lower() != "bearer" or not raw:
        return None
    return ApiKey.prefix_of(raw.strip())


def outcome_of(status: int, noted: str | None) -> str:
    """A request's outcome label: the prediction's own status when it ran, else what the status code says."""
    if noted:
        return noted
    if status == 202:
        return "accepted"
    if status < 400:
        return "succeeded"
    return {401: "denied", 403: "denied", 404: "not_found", 429: "refused", 503: "unavailable"}.get(
        status, "invalid" if status < 500 else "error"
    )


def request_finished(*, record: RequestRecord, protocol: str | None, status, extra: dict) -> None:
    """Count a prediction request (when it was one) and write the request's log line."""
    duration = time.monotonic() - record.started
    fields = {"request_id": record.id, **extra, **record.fields, "status": status}
    fields["duration_ms"] = round(duration * 1000, 3)
    if protocol is not None:
        model = metrics.model_label(fields.get("model"))
        outcome = outcome_of(status, fields.get("outcome")) if isinstance(status, int) else fields["outcome"]
        fields["outcome"] = outcome
        metrics.requests_total.labels(model, protocol, outcome).inc()
        metrics.request_seconds.labels(model, protocol).observe(duration)
    logger.info("request", extra=fields)


class RequestLogMiddleware:
    """Gives every request an id and logs one line when it is answered; counts prediction requests."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        record = RequestRecord(id=request_id_from(request.headers.get(REQUEST_ID_HEADER)))
        token = current_request.set(record)
        request.request_id = record.id
        try:
            response = self.get_response(request)
        finally:
            current_request.reset(token)
        response[REQUEST_ID_HEADER] = record.id
        match = getattr(request, "resolver_match", None)
        route = match.url_name if match else None
        extra = {"method": request.method, "path": request.path}
        prefix = key_prefix_of(request.headers.get("Authorization", ""))
        if prefix:
            extra["key_prefix"] = prefix
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            extra["user"] = user.pk
        request_finished(
            record=record, protocol=PREDICT_ROUTES.get(route), status=response.status_code, extra=extra
        )
        return response


# --- formatters ---------------------------------------------------------------------------------------------


def _fields(record: logging.LogRecord) -> dict:
    return {name: value for name, value in vars(record).items() if name not in _RECORD_ATTRIBUTES}


class _Formatter(logging.Formatter):
    """Formats a second's time once: a busy server writes hundreds of lines within one."""

    _second: tuple = (None, None, "")  # (second, datefmt, formatted), replaced whole: threads may race

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        cached_second, cached_format, formatted = self._second
        if cached_second != second or cached_format != datefmt:
            formatted = time.strftime(datefmt or self.default_time_format, self.converter(second))
            self._second = (second, datefmt, formatted)
        return formatted if datefmt else self.default_msec_format % (formatted, record.msecs)


class PlainFormatter(_Formatter):
    """`time level logger: message key=value …`."""

    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = _fields(record)
        if extra:
            line += " " + " ".join(f"{name}={value}" for name, value in extra.items())
        return line


class JsonFormatter(_Formatter):
    """One JSON object per line: time (UTC), level, logger, message, and the record's fields."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
