"""Admin: users with their plan and this month's usage, plans, keys, the catalog, predictions and usage."""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from .models import ApiKey, Plan, Quota, UsageDay
from .services import key_revoke

User = get_user_model()

admin.site.site_header = "Modelport administration"
admin.site.site_title = "Modelport admin"
admin.site.index_title = "Users, plans, keys, models and usage"


def month_start():
    return timezone.now().date().replace(day=1)


def _month_total(field: str):
    totals = (
        UsageDay.objects.filter(user=OuterRef("pk"), day__gte=month_start())
        .values("user")
        .annotate(total=Sum(field))
        .values("total")
    )
    return Coalesce(Subquery(totals), 0, output_field=IntegerField())


class QuotaInline(admin.StackedInline):
    model = Quota
    can_delete = False
    verbose_name = "plan and quota overrides"
    verbose_name_plural = "plan and quota overrides"
    fields = [
        "plan",
        "requests_per_minute",
        "requests_per_day",
        "compute_seconds_per_month",
        "max_upload_bytes",
        "max_private_models",
    ]


admin.site.unregister(User)


@admin.register(User)
class UserWithQuotaAdmin(UserAdmin):
    inlines = [QuotaInline]
    list_display = [
        "username",
        "email",
        "is_staff",
        "is_active",
        "plan",
        "requests_this_month",
        "tokens_this_month",
        "compute_seconds_this_month",
    ]
    list_filter = [*UserAdmin.list_filter, "quota__plan"]
    list_select_related = ["quota__plan"]

    def get_inlines(self, request, obj):
        # A new user gets its quota row from the post_save signal; an inline on the add form would make a
        # second.
        return self.inlines if obj is not None else []

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                month_requests=_month_total("requests"),
                month_compute_ms=_month_total("compute_ms"),
                month_prompt_tokens=_month_total("prompt_tokens"),
                month_completion_tokens=_month_total("completion_tokens"),
            )
        )

    @admin.display(description="plan", ordering="quota__plan__name")
    def plan(self, user) -> str:
        quota = getattr(user, "quota", None)
        return quota.plan.name if quota else "—"

    @admin.display(description="requests this month", ordering="month_requests")
    def requests_this_month(self, user) -> int:
        return user.month_requests

    @admin.display(description="tokens this month (prompt + completion)")
    def tokens_this_month(self, user) -> str:
        return f"{user.month_prompt_tokens or 0} + {user.month_completion_tokens or 0}"

    @admin.display(description="compute s this month", ordering="month_compute_ms")
    def compute_seconds_this_month(self, user) -> str:
        return f"{(user.month_compute_ms or 0) / 1000:.1f}"


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "requests_per_minute",
        "requests_per_day",
        "compute_seconds_per_month",
        "tokens_per_minute",
        "tokens_per_day",
        "max_upload_bytes",
        "max_private_models",
        "is_default",
    ]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "user",
        "display",
        "scopes",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    list_filter = ["revoked_at", "created_at"]
    search_fields = ["name", "user__username", "prefix"]
    list_select_related = ["user"]
    # The hash is useless to show and the plaintext is never stored: neither appears here.
    fields = [
        "user",
        "name",
        "display",
        "scopes",
        "requests_per_minute",
        "requests_per_day",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    readonly_fields = ["user", "display", "scopes", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke_keys"]

    def has_add_permission(self, request) -> bool:
        return False  # a key's plaintext can only be shown to its owner: create keys on /settings/keys/

    @admin.action(description="Revoke the selected keys")
    def revoke_keys(self, request, queryset):
        keys = list(queryset.filter(revoked_at__isnull=True))
        for key in keys:
            key_revoke(key=key)
        self.message_user(request, f"Revoked {len(keys)} key(s).", messages.SUCCESS)


@admin.register(UsageDay)
class UsageDayAdmin(admin.ModelAdmin):
    list_display = [
        "day",
        "user",
        "version",
        "api_key",
        "requests",
        "succeeded",
        "compute_ms",
        "prompt_tokens",
        "completion_tokens",
        "bytes_in",
        "bytes_out",
    ]
    list_filter = ["day", ("user", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["user__username", "version__model__name"]
    list_select_related = ["user", "api_key", "version__model__owner"]
    date_hierarchy = "day"
    actions = ["export_csv"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Export the selected rows as CSV")
    def export_csv(self, request, queryset):
        from .views import usage_csv_response

        return usage_csv_response(queryset, "modelport-usage.csv")
