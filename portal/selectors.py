"""Reads for the usage page, the usage API and the CSV exports."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date, timedelta

from django.db.models import Sum
from django.utils import timezone

from .models import UsageDay
from .quotas import Limits, compute_used_ms, current_token_windows, current_windows, effective_limits


@dataclass
class UsageSummary:
    limits: Limits
    requests_this_minute: int
    requests_today: int
    compute_seconds_this_month: float
    minute_resets_in: int
    day_resets_in: int
    tokens_this_minute: int = 0
    tokens_today: int = 0

    def as_dict(self) -> dict:
        limits = self.limits
        used = {
            "requests_per_minute": self.requests_this_minute,
            "requests_per_day": self.requests_today,
            "compute_seconds_per_month": round(self.compute_seconds_this_month, 3),
            "tokens_per_minute": self.tokens_this_minute,
            "tokens_per_day": self.tokens_today,
        }
        return {
            "plan": limits.plan,
            "limits": {key: value for key, value in limits.as_dict().items() if key != "plan"},
            "used": used,
            "remaining": {
                "requests_per_minute": max(0, limits.requests_per_minute - self.requests_this_minute),
                "requests_per_day": max(0, limits.requests_per_day - self.requests_today),
                "compute_seconds_per_month": round(
                    max(0.0, limits.compute_seconds_per_month - self.compute_seconds_this_month), 3
                ),
                "tokens_per_minute": max(0, limits.tokens_per_minute - self.tokens_this_minute),
                "tokens_per_day": max(0, limits.tokens_per_day - self.tokens_today),
            },
            "reset": {
                "requests_per_minute": self.minute_resets_in,
                "requests_per_day": self.day_resets_in,
                "tokens_per_minute": self.minute_resets_in,
                "tokens_per_day": self.day_resets_in,
            },
        }


def usage_summary(user) -> UsageSummary:
    now = time.time()
    minute, day = current_windows(user, now=now)[:2]
    token_minute, token_day = current_token_windows(user, now=now)
    return UsageSummary(
        limits=effective_limits(user),
        requests_this_minute=minute.used,
        requests_today=day.used,
        compute_seconds_this_month=compute_used_ms(user, now=now) / 1000,
        minute_resets_in=minute.reset,
        day_resets_in=day.reset,
        tokens_this_minute=token_minute.used,
        tokens_today=token_day.used,
    )


def last_days(count: int) -> list[date]:
    today = timezone.now().date()
    return [today - timedelta(days=offset) for offset in range(count - 1, -1, -1)]


def usage_per_day(user, *, days: int = 30) -> list[dict]:
    """One entry per day (oldest first, days without use included) with the day's totals."""
    calendar = last_days(days)
    totals = {
        row["day"]: row
        for row in UsageDay.objects.filter(user=user, day__gte=calendar[0])
        .values("day")
        .annotate(
            requests=Sum("requests"),
            succeeded=Sum("succeeded"),
            compute_ms=Sum("compute_ms"),
            bytes_in=Sum("bytes_in"),
            bytes_out=Sum("bytes_out"),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
        )
    }
    series = []
    for day in calendar:
        row = totals.get(day, {})
        series.append(
            {
                "day": day.isoformat(),
                "requests": row.get("requests") or 0,
                "succeeded": row.get("succeeded") or 0,
                "compute_seconds": round((row.get("compute_ms") or 0) / 1000, 3),
                "bytes_in": row.get("bytes_in") or 0,
                "bytes_out": row.get("bytes_out") or 0,
                "prompt_tokens": row.get("prompt_tokens") or 0,
                "completion_tokens": row.get("completion_tokens") or 0,
            }
        )
    return series


def usage_per_day_by(user, *, dimension: str, days: int = 30) -> dict[str, dict[str, int]]:
    """Requests per day split by model (`"model"`) or by key (`"key"`): {label: {iso day: requests}}."""
    calendar = last_days(days)
    # Keys are told apart by their prefix too: two keys may share a name.
    fields = {"model": ["version__model__name"], "key": ["api_key__name", "api_key__prefix"]}[dimension]
    rows = (
        UsageDay.objects.filter(user=user, day__gte=calendar[0])
        .values(*fields, "day")
        .annotate(requests=Sum("requests"))
    )
    split: dict[str, dict[str, int]] = {}
    for row in rows:
        if dimension == "model":
            name = row["version__model__name"] or "deleted model"
        elif row["api_key__prefix"]:
            name = f"{row['api_key__name']} (mp_{row['api_key__prefix']})"
        else:
            name = "browser session"
        per_day = split.setdefault(name, {})
        per_day[row["day"].isoformat()] = per_day.get(row["day"].isoformat(), 0) + row["requests"]
    return split


def usage_rows_for_export(queryset):
    """Ledger rows with names, for CSV: one line per user, key, model version and day."""
    return queryset.select_related("user", "api_key", "version__model__owner").order_by("day", "user_id")


CSV_HEADER = [
    "day",
    "user",
    "model",
    "version",
    "api_key",
    "requests",
    "succeeded",
    "compute_seconds",
    "bytes_in",
    "bytes_out",
]


def csv_row(usage: UsageDay) -> list:
    version = usage.version
    return [
        usage.day.isoformat(),
        usage.user.username,
        version.model.slug if version else "",
        version.number if version else "",
        usage.api_key.display if usage.api_key else "",
        usage.requests,
        usage.succeeded,
        round(usage.compute_ms / 1000, 3),
        usage.bytes_in,
        usage.bytes_out,
    ]
