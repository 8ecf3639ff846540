"""A dependency that is down is a `503` with `Retry-After`, never a 500: the one place that knows which
exceptions mean "PostgreSQL, Redis or the task queue is out of reach" and what to tell the caller.

The surfaces format the answer themselves (`/api/` here and in DRF's exception handler, `/v2` in
`inference.protocols.oip_errors`, gRPC in `inference.protocols.grpc_service`, pages in
`portal.views.server_error`); they all ask `outage_of(exc)` first. Messages name the dependency, never a
host, port or credential.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis.exceptions
from django.db import utils as db_utils

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5

DATABASE = "database"
REDIS = "cache"
TASK_QUEUE = "task queue"

MESSAGES = {
    DATABASE: "The database is temporarily unavailable; retry in a few seconds.",
    REDIS: "The cache and counter store is temporarily unavailable; retry in a few seconds.",
    TASK_QUEUE: "The task queue is temporarily unavailable; retry in a few seconds.",
}


@dataclass(frozen=True)
class Outage:
    dependency: str
    retry_after: int = RETRY_AFTER_SECONDS

    @property
    def message(self) -> str:
        return MESSAGES[self.dependency]

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    def body(self, message_key: str) -> dict:
        return {message_key: self.message, "unavailable": self.dependency}


def _dependency_of(exc: BaseException) -> str | None:
    if isinstance(exc, (db_utils.OperationalError, db_utils.InterfaceError)):
        return DATABASE
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        return REDIS
    if _is_broker_error(exc):
        return TASK_QUEUE
    return None


def _is_broker_error(exc: BaseException) -> bool:
    # kombu's OperationalError is what Celery's publish raises once its connection retries are spent.
    try:
        from kombu.exceptions import OperationalError as KombuOperationalError
    except ImportError:  # pragma: no cover - kombu comes with Celery, a dependency
        return False
    return isinstance(exc, KombuOperationalError)


def outage_of(exc: BaseException | None) -> Outage | None:
    """The dependency outage behind `exc`, following its causes (django-redis wraps redis-py's errors in
    ConnectionInterrupted; Celery wraps the transport's in kombu's OperationalError); else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        dependency = _dependency_of(exc)
        if dependency is not None:
            return Outage(dependency)
        exc = exc.__cause__ or exc.__context__
    return None


def log_outage(outage: Outage, exc: BaseException, where: str) -> None:
    # One line, no traceback: an outage is an operations event, not a bug.
    logger.warning("%s unavailable at %s: %s", outage.dependency, where, type(exc).__name__)


def api_exception_handler(exc, context):
    """DRF's exception handler (settings.REST_FRAMEWORK), a dependency outage answered 503 + Retry-After."""
    from rest_framework.response import Response
    from rest_framework.views import exception_handler, set_rollback

    outage = outage_of(exc)
    if outage is None:
        return exception_handler(exc, context)
    request = context.get("request")
    log_outage(outage, exc, request.path if request is not None else "api")
    set_rollback()
    return Response(outage.body("detail"), status=503, headers=outage.headers)
