"""Accounts and access: API keys (plans, quotas and usage live here too)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class Scope(models.TextChoices):
    READ = "read"
    PREDICT = "predict"
    UPLOAD = "upload"


KEY_PREFIX_LENGTH = 8


def hash_secret(raw_key: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough; a password hash would only slow every request.
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

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} (mp_{self.prefix}…)"

    @classmethod
    def issue(cls, *, user, name: str, scopes: list[str], expires_at=None) -> tuple[ApiKey, str]:
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
