"""Keep the cached key and limit look-ups true: every change that affects them invalidates them."""

from __future__ import annotations

from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from .authentication import invalidate_keys
from .models import ApiKey, Plan, Quota
from .quotas import invalidate_limits


@receiver(post_save, sender=settings.AUTH_USER_MODEL)
def give_new_users_the_default_plan(sender, instance, created, raw=False, **kwargs):
    if created and not raw:
        Quota.objects.get_or_create(user=instance, defaults={"plan": Plan.default()})


@receiver([post_save, post_delete], sender=settings.AUTH_USER_MODEL)
def forget_cached_user(sender, instance, created=False, **kwargs):
    # Cached keys carry their owner (is_active, is_staff): a disabled account must stop working at once.
    if not created:
        invalidate_keys(ApiKey.objects.filter(user_id=instance.pk).values_list("prefix", flat=True))
        invalidate_limits([instance.pk])


@receiver([post_save, post_delete], sender=ApiKey)
def forget_cached_key(sender, instance, **kwargs):
    invalidate_keys([instance.prefix])


@receiver([post_save, post_delete], sender=Quota)
def forget_cached_quota(sender, instance, **kwargs):
    invalidate_limits([instance.user_id])


@receiver([post_save, post_delete], sender=Plan)
def forget_cached_plan(sender, instance, **kwargs):
    invalidate_limits(Quota.objects.filter(plan_id=instance.pk).values_list("user_id", flat=True))
