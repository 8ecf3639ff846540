"""Admin: users with their plan and this month's usage, plans, keys, the catalog, predictions and usage."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db.models import Count, IntegerField, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.template.defaultfilters import filesizeformat
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


# ---- limits, as an admin reads them ---------------------------------------------------------------------
# The same words for a plan and for a user's overrides: a label with its unit, and what is counted.
LIMITS = {
    "requests_per_minute": (
        "Requests per minute",
        "Model runs started in one UTC minute: REST predict, /v2 infer, gRPC and the try-it widget alike.",
    ),
    "requests_per_day": ("Requests per day", "Model runs started in one UTC day."),
    "compute_seconds_per_month": (
        "Compute seconds per month",
        "Seconds of runner time in a calendar month (3600 = one hour).",
    ),
    "tokens_per_minute": (
        "Tokens per minute",
        "Chat models: prompt plus completion tokens in one UTC minute.",
    ),
    "tokens_per_day": ("Tokens per day", "Chat models: prompt plus completion tokens in one UTC day."),
    "max_upload_bytes": (
        "Largest upload (bytes)",
        "One model file, in bytes: 524288000 is 500 MB (the server's own limit may be lower).",
    ),
    "max_private_models": ("Private models", "How many private models the user may own."),
}
LIMIT_GROUPS = [
    ("Requests", ["requests_per_minute", "requests_per_day"]),
    ("Compute", ["compute_seconds_per_month"]),
    ("Tokens (chat models)", ["tokens_per_minute", "tokens_per_day"]),
    ("Uploads", ["max_upload_bytes", "max_private_models"]),
]


def limit_text(name: str, value: int | None) -> str:
    """A limit with its unit: "60 / min", "1,000 / day", "1 h / month", "500.0 MB"."""
    if value is None:
        return "—"
    if name == "max_upload_bytes":
        return filesizeformat(value).replace("\xa0", " ")
    if name == "max_private_models":
        return f"{value:,}"
    if name == "compute_seconds_per_month":
        amount = f"{round(value / 3600, 2):g} h" if value >= 3600 else f"{value:,} s"
        return f"{amount} / month"
    per = "min" if name.endswith("_per_minute") else "day"
    return f"{value:,} / {per}"


class PlanForm(forms.ModelForm):
    class Meta:
        model = Plan
        fields = ["name", "is_default", *LIMITS]
        labels = {name: label for name, (label, _) in LIMITS.items()}
        help_texts = {name: help for name, (_, help) in LIMITS.items()}


class QuotaForm(forms.ModelForm):
    """A user's overrides: each limit says what the plan gives when it is left empty."""

    class Meta:
        model = Quota
        fields = ["plan", *LIMITS]
        labels = {name: label for name, (label, _) in LIMITS.items()}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        plan = self.instance.plan if self.instance.plan_id else None
        for name, (_, help) in LIMITS.items():
            if name not in self.fields:
                continue
            fallback = f"the plan's {limit_text(name, getattr(plan, name))}" if plan else "the plan's"
            self.fields[name].help_text = f"{help} Empty: {fallback}."


class QuotaInline(admin.StackedInline):
    model = Quota
    form = QuotaForm
    can_delete = False
    verbose_name = "plan and quota overrides"
    verbose_name_plural = "plan and quota overrides"
    fieldsets = [
        (None, {"fields": ["plan"]}),
        *[(f"{title}: overrides", {"fields": names}) for title, names in LIMIT_GROUPS],
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


def limit_column(name: str, *, overrides: bool = False):
    """A changelist column showing the limit `name` with its unit (a Quota's effective value when
    `overrides`, marked when it is the user's own)."""
    # Short headings: the cells carry the unit ("60 / min", "1,000 / day"), so the table fits the page.
    label = {"max_upload_bytes": "Largest upload", "max_private_models": "Private models"}.get(
        name, name.split("_")[0].capitalize()
    )

    @admin.display(description=label, ordering=None if overrides else name)
    def column(obj) -> str:
        own = getattr(obj, name)
        if not overrides:
            text = limit_text(name, own)
        else:
            value = own if own is not None else getattr(obj.plan, name)
            text = limit_text(name, value) + (" (own)" if own is not None else "")
        return text.replace(" ", "\xa0")  # one value, one line

    column.__name__ = name
    return column


@admin.register(Plan)
class PlanAdmin(admin.ModelAdmin):
    form = PlanForm
    list_display = [
        "name",
        *[limit_column(name) for name in LIMITS],
        "is_default",
        "users",
    ]
    fieldsets = [(None, {"fields": ["name", "is_default"]}), *[(t, {"fields": n}) for t, n in LIMIT_GROUPS]]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(user_count=Count("quotas"))

    @admin.display(description="users", ordering="user_count")
    def users(self, plan) -> int:
        return plan.user_count


@admin.register(Quota)
class QuotaAdmin(admin.ModelAdmin):
    """Every user's effective limits at a glance; "(own)" marks an override of the plan."""

    form = QuotaForm
    list_display = ["user", "plan", *[limit_column(name, overrides=True) for name in LIMITS]]
    list_filter = ["plan"]
    list_select_related = ["user", "plan"]
    search_fields = ["user__username", "user__email"]
    fieldsets = [
        (None, {"fields": ["user", "plan"]}),
        *[(f"{title}: overrides", {"fields": names}) for title, names in LIMIT_GROUPS],
    ]
    readonly_fields = ["user"]

    def has_add_permission(self, request) -> bool:
        return False  # every user gets one when created (a signal); change it here or on the user's page

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a user without one could not be admitted


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
