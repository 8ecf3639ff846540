"""Writes for keys and quotas. Views, the API, the admin and the commands all go through these."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction
from django.utils import timezone

from .models import ApiKey, Plan, Quota, Scope
from .quotas import Limits, effective_limits, quota_for


def key_create(
    *,
    user,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    requests_per_minute: int | None = None,
    requests_per_day: int | None = None,
) -> tuple[ApiKey, str]:
    """Issue a key; the plaintext is returned this once (show it, never log or store it)."""
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown:
        raise ValueError(f"Unknown scopes: {', '.join(unknown)}. Use read, predict, upload.")
    if not scopes:
        raise ValueError("Choose at least one scope: read, predict, upload.")
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("The expiry must be in the future.")
    return ApiKey.issue(
        user=user,
        name=name,
        scopes=scopes,
        expires_at=expires_at,
        requests_per_minute=requests_per_minute,
        requests_per_day=requests_per_day,
    )


def key_revoke(*, key: ApiKey) -> None:
    key.revoke()  # saving fires the signal that drops the cached copy


def quota_set(
    *,
    user,
    plan: Plan | None = None,
    requests_per_minute: int | None = None,
    requests_per_day: int | None = None,
    compute_seconds_per_month: int | None = None,
    tokens_per_minute: int | None = None,
    tokens_per_day: int | None = None,
) -> Limits:
    """Set a user's plan and overrides (None leaves a field as it is); returns the effective limits."""
    with transaction.atomic():
        quota = quota_for(user)
        quota = Quota.objects.select_for_update().select_related("plan").get(pk=quota.pk)
        changed = []
        if plan is not None:
            quota.plan = plan
            changed.append("plan")
        for name, value in (
            ("requests_per_minute", requests_per_minute),
            ("requests_per_day", requests_per_day),
            ("compute_seconds_per_month", compute_seconds_per_month),
            ("tokens_per_minute", tokens_per_minute),
            ("tokens_per_day", tokens_per_day),
        ):
            if value is not None:
                setattr(quota, name, value)
                changed.append(name)
        quota.save(update_fields=changed)
    return effective_limits(user)
