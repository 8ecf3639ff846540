"""The catalog in the admin: every change goes through the same services as the pages and the API."""

from django import forms
from django.contrib import admin, messages

from . import services
from .models import AccessRequest, Model, ModelVersion, Visibility


class ModelVersionInline(admin.TabularInline):
    model = ModelVersion
    extra = 0
    can_delete = False
    fields = [
        "number",
        "format",
        "status",
        "size",
        "sha256",
        "reason",
        "derived_from",
        "low_agreement",
        "created_at",
    ]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # versions come from validated uploads only


def change_visibility(modeladmin, request, queryset, visibility: str) -> None:
    """Through the model page's and the API's service: the owner's private-model allowance holds here too."""
    changed, refused = [], []
    for model in queryset.select_related("owner"):
        try:
            services.model_update(model=model, visibility=visibility)
        except services.PrivateModelLimitReached as exc:
            refused.append(f"{model.slug}: {exc}")
        else:
            changed.append(model.slug)
    if changed:
        done = "Unlisted" if visibility == Visibility.PRIVATE else "Listed"
        modeladmin.message_user(request, f"{done} {len(changed)} model(s): {', '.join(changed)}.")
    for reason in refused:
        modeladmin.message_user(request, f"Not changed, {reason}", level=messages.ERROR)


@admin.action(description="Unlist (make private)")
def unlist_models(modeladmin, request, queryset):
    change_visibility(modeladmin, request, queryset, Visibility.PRIVATE)


@admin.action(description="List (make public)")
def list_models(modeladmin, request, queryset):
    change_visibility(modeladmin, request, queryset, Visibility.PUBLIC)


class ModelAdminForm(forms.ModelForm):
    class Meta:
        model = Model
        fields = [
            "owner",
            "name",
            "task",
            "description",
            "tags",
            "license",
            "labels",
            "preprocessing",
            "visibility",
            "gated",
            "queue",
        ]

    def clean(self):
        cleaned = super().clean()
        # The model page's and the API's rule: making a model private needs room in its owner's allowance.
        if (
            self.instance.pk
            and "visibility" in self.changed_data
            and cleaned.get("visibility") == Visibility.PRIVATE
        ):
            try:
                services.check_private_model_allowance(owner=self.instance.owner, excluding=self.instance)
            except services.PrivateModelLimitReached as exc:
                self.add_error("visibility", str(exc))
        return cleaned


@admin.register(Model)
class ModelAdmin(admin.ModelAdmin):
    actions = [unlist_models, list_models]
    form = ModelAdminForm
    list_display = [
        "name",
        "owner",
        "task",
        "latest_format",
        "visibility",
        "gated",
        "queue",
        "downloads",
        "runs",
        "updated_at",
    ]
    list_filter = ["visibility", "gated", "task", "latest_format", "queue"]
    search_fields = ["name", "owner__username"]
    list_select_related = ["owner"]
    raw_id_fields = ["owner"]
    readonly_fields = ["latest_format", "downloads", "runs", "created_at", "updated_at"]
    inlines = [ModelVersionInline]

    def save_model(self, request, obj, form, change):
        if not change:
            # Models are created by uploads; an admin-made row has no versions and stays unpublished.
            super().save_model(request, obj, form, change)
            return
        services.model_update(model=obj, **{name: form.cleaned_data[name] for name in form.changed_data})

    # "Delete" on a model's page and the "Delete selected" action both go through the service, so the
    # versions' files leave the disk with the rows.
    def delete_model(self, request, obj):
        services.model_delete(model=obj)

    def delete_queryset(self, request, queryset):
        for model in queryset:
            services.model_delete(model=model)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "format", "status", "size", "created_at"]
    list_filter = ["status", "format"]
    search_fields = ["model__name", "model__owner__username", "sha256"]
    list_select_related = ["model__owner"]
    readonly_fields = [
        "model",
        "number",
        "file",
        "format",
        "size",
        "sha256",
        "status",
        "reason",
        "signature",
        "notes",
        "example",
        "tokenizer",
        "tokenizer_size",
        "tokenizer_sha256",
        "stored_encrypted",
        "created_at",
    ]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="stored encrypted")
    def stored_encrypted(self, version: ModelVersion) -> str:
        # The master key's id only (never a key): which MODEL_ENCRYPTION_KEY a restore needs.
        ids = {envelope.split(".")[1] for envelope in (version.file_key, version.tokenizer_key) if envelope}
        return f"yes, under master key {', '.join(sorted(ids))}" if ids else "no"


@admin.action(description="Approve (the user may run and download the model)")
def approve_access(modeladmin, request, queryset):
    for access in queryset:
        services.access_request_decide(request=access, approve=True)


@admin.action(description="Deny (revokes an approved access)")
def deny_access(modeladmin, request, queryset):
    for access in queryset:
        services.access_request_decide(request=access, approve=False)


@admin.register(AccessRequest)
class AccessRequestAdmin(admin.ModelAdmin):
    """Read-only rows: answers go through the service (the actions), which forgets the cached grant."""

    actions = [approve_access, deny_access]
    list_display = ["model", "user", "status", "created_at", "decided_at"]
    list_filter = ["status"]
    search_fields = ["model__name", "model__owner__username", "user__username"]
    list_select_related = ["model__owner", "user"]
    readonly_fields = ["model", "user", "reason", "status", "created_at", "decided_at"]

    def has_add_permission(self, request) -> bool:
        return False
