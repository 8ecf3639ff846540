"""Accounts and access: API keys (plans, quotas and usage live here too)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables


class Scope(models.TextChoices):
    READ = "read"
    PREDICT = "predict"
    UPLOAD = "upload"


KEY_PREFIX_LENGTH = 8


@sensitive_variables("raw_key")
def hash_secret(raw_key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough; a password hash would only slow every
    # request.
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(models.Model):
    """A bearer key: `mp_<prefix>_<secret>`. Only the prefix (to find the row) and a hash are stored."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=KEY_PREFIX_LENGTH, unique=True)
    hashed_key = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Optional caps below the user's own limits (e.g. a key handed to a script that must not eat the whole
    # quota).
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (mp_{self.prefix}…)"

    @classmethod
    def issue(
        cls,
        *,
        user,
        name: str,
        scopes: list[str],
        expires_at=None,
        requests_per_minute: int | None = None,
        requests_per_day: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; the plaintext is returned this once and never stored."""
        while True:
            prefix = secrets.token_hex(KEY_PREFIX_LENGTH // 2)
            if not cls.objects.filter(prefix=prefix).exists():
                break
        raw_key = f"mp_{prefix}_{secrets.token_urlsafe(32)}"
        key = cls.objects.create(
            user=user,
            name=name,
            prefix=prefix,
            hashed_key=hash_secret(raw_key),
            scopes=sorted(set(scopes)),
            expires_at=expires_at,
            requests_per_minute=requests_per_minute,
            requests_per_day=requests_per_day,
        )
        return key, raw_key

    @staticmethod
    def prefix_of(raw_key: str) -> str | None:
        parts = raw_key.split("_", 2)
        if len(parts) != 3 or parts[0] != "mp" or len(parts[1]) != KEY_PREFIX_LENGTH:
            return None
        return parts[1]

    def matches(self, raw_key: str) -> bool:
        return hmac.compare_digest(self.hashed_key, hash_secret(raw_key))

    @property
    def display(self) -> str:
        return f"mp_{self.prefix}_…"

    def is_active(self, now=None) -> bool:
        now = now or timezone.now()
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def revoke(self) -> None:
        if self.revoked_at is None:
            self.revoked_at = timezone.now()
            self.save(update_fields=["revoked_at"])

    @property
    def scopes_display(self) -> str:
        return ", ".join(self.scopes) or "none"


class Plan(models.Model):
    """What a user may consume. Every user has one (the default plan unless an admin chose another)."""

    name = models.CharField(max_length=50, unique=True)
    requests_per_minute = models.PositiveIntegerField()
    requests_per_day = models.PositiveIntegerField()
    compute_seconds_per_month = models.PositiveIntegerField()
    max_upload_bytes = models.PositiveBigIntegerField()
    max_private_models = models.PositiveIntegerField()
    # Generative models are metered in tokens (prompt plus completion).
    tokens_per_minute = models.PositiveIntegerField(default=20_000)
    tokens_per_day = models.PositiveIntegerField(default=200_000)
    is_default = models.BooleanField(default=False, help_text="New users get this plan.")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["is_default"], condition=models.Q(is_default=True), name="one_default_plan"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @classmethod
    def default(cls) -> Plan:
        plan = cls.objects.filter(is_default=True).first()
        if plan is None:
            # The data migration creates it; this only runs if an admin deleted it.
            plan, _ = cls.objects.get_or_create(
                name="Free",
                defaults=dict(
                    requests_per_minute=60,
                    requests_per_day=1000,
                    compute_seconds_per_month=3600,
                    max_upload_bytes=500 * 1024 * 1024,
                    max_private_models=10,
                    is_default=not cls.objects.filter(is_default=True).exists(),
                ),
            )
        return plan


class Quota(models.Model):
    """A user's plan and per-user overrides (empty fields fall back to the plan)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="quotas")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    requests_per_day = models.PositiveIntegerField(null=True, blank=True)
    compute_seconds_per_month = models.PositiveIntegerField(null=True, blank=True)
    max_upload_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    max_private_models = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_day = models.PositiveIntegerField(null=True, blank=True)

    LIMIT_FIELDS = (
        "requests_per_minute",
        "requests_per_day",
        "compute_seconds_per_month",
        "max_upload_bytes",
        "max_private_models",
        "tokens_per_minute",
        "tokens_per_day",
    )

    def __str__(self) -> str:
        return f"{self.user} on {self.plan}"

    def effective(self) -> dict[str, int]:
        return {
            name: getattr(self, name) if getattr(self, name) is not None else getattr(self.plan, name)
            for name in self.LIMIT_FIELDS
        }


class UsageDay(models.Model):
    """Daily totals of finished predictions per user, key and model version, written by the worker."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="usage_days")
    api_key = models.ForeignKey(
        ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_days"
    )
    version = models.ForeignKey(
        "marketplace.ModelVersion",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="usage_days",
    )
    day = models.DateField()
    requests = models.PositiveIntegerField(default=0)
    succeeded = models.PositiveIntegerField(default=0)
    compute_ms = models.FloatField(default=0)
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "api_key", "version", "day"],
                nulls_distinct=False,
                name="one_usage_row_per_day",
            )
        ]
        indexes = [models.Index(fields=["user", "day"])]
        verbose_name = "usage day"

    def __str__(self) -> str:
        return f"{self.user} {self.day}: {self.requests} requests"


class UsageCounter(models.Model):
    """A fixed-window counter, one row per subject and window kind (e.g. `u:7:minute`), reused window after
    window.

    Without Redis these rows are the rate limits (a conditional UPDATE admits a request); in every mode the
    `u:<id>:compute` row holds this month's charged compute milliseconds.
    """

    key = models.CharField(max_length=64, unique=True)
    window = models.BigIntegerField(
        default=0, help_text="Window number: minutes, days or months since the epoch."
    )
    used = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key} @ {self.window}: {self.used}"
