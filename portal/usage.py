"""The usage ledger: ended predictions added to the daily totals (`UsageDay`) and to the month's compute.

Called by inference's ledger with plain values (portal knows no prediction table), once per ended prediction,
inside the transaction that ended it. Every one counts as a request; only a succeeded one costs compute. The
month's compute is the counter admission (`quotas.py`) checks: in PostgreSQL, and in Redis when it admits.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date

from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When

from .models import UsageCounter, UsageDay
from .quotas import compute_counter_key, compute_redis_key, month_number, quota_backend, redis_script

CHARGE_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.call('INCRBY', KEYS[1], ARGV[1]) end
return -1
"""


@dataclass(frozen=True)
class Usage:
    """One ended prediction, as the usage ledger counts it.

    Plain values: portal knows no prediction table."""

    user_id: int
    api_key_id: int | None
    version_id: int | None
    day: date
    succeeded: bool
    compute_ms: float
    bytes_in: int
    bytes_out: int
    prompt_tokens: int = 0
    completion_tokens: int = 0


def usage_record(usages: list[Usage]) -> None:
    """Add ended predictions to the daily ledger (``UsageDay``) and this month's compute.

    The caller (inference's ledger) hands each prediction over exactly once. Every one counts as a request;
    only a succeeded one costs compute. Call it inside the transaction that ended the predictions.
    """
    if not usages:
        return
    month = month_number(time.time())
    days: dict[tuple, dict] = defaultdict(
        lambda: dict(
            requests=0,
            succeeded=0,
            compute_ms=0.0,
            bytes_in=0,
            bytes_out=0,
            prompt_tokens=0,
            completion_tokens=0,
        )
    )
    compute_by_user: dict[int, int] = defaultdict(int)
    for usage in usages:
        totals = days[(usage.user_id, usage.api_key_id, usage.version_id, usage.day)]
        totals["requests"] += 1
        totals["bytes_in"] += usage.bytes_in
        totals["bytes_out"] += usage.bytes_out
        totals["prompt_tokens"] += usage.prompt_tokens
        totals["completion_tokens"] += usage.completion_tokens
        if usage.succeeded:
            totals["succeeded"] += 1
            totals["compute_ms"] += usage.compute_ms
            compute_by_user[usage.user_id] += math.ceil(usage.compute_ms)
    # Rows in a fixed order: workers recording overlapping batches never wait on each other in a cycle.
    for (user_id, api_key_id, version_id, day), totals in sorted(days.items(), key=lambda item: str(item[0])):
        _add_usage_day(user_id=user_id, api_key_id=api_key_id, version_id=version_id, day=day, **totals)
    for user_id, compute_ms in sorted(compute_by_user.items()):
        if compute_ms:
            _add_compute(user_id=user_id, month=month, compute_ms=compute_ms)
    if quota_backend() == "redis" and any(compute_by_user.values()):
        charges = {user_id: ms for user_id, ms in compute_by_user.items() if ms}
        transaction.on_commit(lambda: _charge_redis(charges, month))


def usage_keep_without_versions(version_ids) -> None:
    """Fold the usage of versions about to be deleted into rows without a version, so the totals per user, key
    and day stay (deleting a version would otherwise null its rows, colliding with the day's other rows)."""
    with transaction.atomic():
        for row in UsageDay.objects.select_for_update().filter(version_id__in=list(version_ids)):
            _add_usage_day(
                user_id=row.user_id,
                api_key_id=row.api_key_id,
                version_id=None,
                day=row.day,
                requests=row.requests,
                succeeded=row.succeeded,
                compute_ms=row.compute_ms,
                bytes_in=row.bytes_in,
                bytes_out=row.bytes_out,
                prompt_tokens=row.prompt_tokens,
                completion_tokens=row.completion_tokens,
            )
            row.delete()


def _add_usage_day(
    *,
    user_id,
    api_key_id,
    version_id,
    day,
    requests,
    succeeded,
    compute_ms,
    bytes_in,
    bytes_out,
    prompt_tokens=0,
    completion_tokens=0,
):
    lookup = dict(user_id=user_id, api_key_id=api_key_id, version_id=version_id, day=day)
    increments = dict(
        requests=F("requests") + requests,
        succeeded=F("succeeded") + succeeded,
        compute_ms=F("compute_ms") + compute_ms,
        bytes_in=F("bytes_in") + bytes_in,
        bytes_out=F("bytes_out") + bytes_out,
        prompt_tokens=F("prompt_tokens") + prompt_tokens,
        completion_tokens=F("completion_tokens") + completion_tokens,
    )
    if UsageDay.objects.filter(**lookup).update(**increments):
        return
    try:
        with transaction.atomic():
            UsageDay.objects.create(
                **lookup,
                requests=requests,
                succeeded=succeeded,
                compute_ms=compute_ms,
                bytes_in=bytes_in,
                bytes_out=bytes_out,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
            )
    except IntegrityError:  # another worker created the row first
        UsageDay.objects.filter(**lookup).update(**increments)


def _add_compute(*, user_id: int, month: int, compute_ms: int) -> None:
    key = compute_counter_key(user_id)
    increment = dict(
        used=Case(When(window=month, then=F("used") + compute_ms), default=Value(compute_ms)),
        window=Value(month),
    )
    if UsageCounter.objects.filter(key=key).update(**increment):
        return
    try:
        with transaction.atomic():
            UsageCounter.objects.create(key=key, window=month, used=compute_ms)
    except IntegrityError:
        UsageCounter.objects.filter(key=key).update(**increment)


def _charge_redis(charges: dict[int, int], month: int) -> None:
    # Only bumps a counter Redis already has; a missing one is seeded from PostgreSQL, which includes this
    # charge.
    script = redis_script("charge", CHARGE_SCRIPT)
    for user_id, compute_ms in charges.items():
        script(keys=[compute_redis_key(user_id, month)], args=[compute_ms])
