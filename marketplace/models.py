"""The catalog: a model owned by a user, and its immutable, numbered versions."""

from __future__ import annotations

import json

from django.conf import settings
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import Lower
from django.urls import reverse


class Task(models.TextChoices):
    IMAGE_CLASSIFICATION = "image-classification"
    TABULAR_CLASSIFICATION = "tabular-classification"
    TABULAR_REGRESSION = "tabular-regression"
    TEXT_CLASSIFICATION = "text-classification"
    FEATURE_EXTRACTION = "feature-extraction"
    TEXT_GENERATION = "text-generation"
    OTHER = "other"


class Visibility(models.TextChoices):
    PUBLIC = "public"
    PRIVATE = "private"


class Format(models.TextChoices):
    ONNX = "onnx"
    TORCHSCRIPT = "torchscript"
    TORCH_EXPORT = "torch-export"
    GGUF = "gguf"


model_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    "Use 1 to 100 letters, digits, '.', '_' or '-', starting with a letter or digit.",
)


queue_name_validator = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "Letters, digits, '.', '_' and '-', starting with a letter or digit."
)


class Model(models.Model):
    # No index of its own: `model_owner_downloads` and the unique (owner, lower(name)) both lead with
    # owner_id, and one index less keeps bulk inserts (seed_catalog) fast.
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="models", db_index=False
    )
    name = models.CharField(max_length=100, validators=[model_name_validator])
    task = models.CharField(max_length=32, choices=Task.choices, default=Task.OTHER)
    description = models.TextField(blank=True, help_text="Model card, in Markdown.")
    tags = models.JSONField(default=list, blank=True)
    license = models.CharField(max_length=100, blank=True)
    labels = models.JSONField(default=list, blank=True, help_text="Class labels, in output order.")
    preprocessing = models.JSONField(
        default=dict, blank=True, help_text="Image models: size, color mode, mean, std, layout."
    )
    visibility = models.CharField(max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC)
    # Gated: everyone sees the page and card, but only users the owner approved (AccessRequest) run or
    # download it.
    gated = models.BooleanField(default=False)
    # The format of the latest ready version, kept here so browsing filters on one
    # table; blank until one is ready.
    latest_format = models.CharField(max_length=16, choices=Format.choices, blank=True, default="")
    # Full-text document over name, card and tags, kept up to date by a PostgreSQL trigger (migration 0002);
    # always NULL on SQLite, where search falls back to icontains.
    search_document = SearchVectorField(null=True, editable=False)
    downloads = models.PositiveBigIntegerField(default=0)
    runs = models.PositiveBigIntegerField(default=0)
    # Where the model runs: the worker pool (Celery queue, see INFERENCE_QUEUES) an admin placed it on, e.g.
    # big models on big machines; blank: the default queue (INFERENCE_JOB_QUEUE).
    queue = models.CharField(
        max_length=64,
        blank=True,
        default="",
        validators=[queue_name_validator],
        help_text="The worker pool (Celery queue) that validates and runs this model; blank for the default.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint("owner", Lower("name"), name="model_name_unique_per_owner")]
        indexes = [
            models.Index(fields=["visibility", "-updated_at"]),
            models.Index(fields=["visibility", "-runs"]),
            # Sort orders with their tie-breaker, so a page is read straight from an index. The GIN indexes
            # (search_document, tags) are PostgreSQL-only: migration 0002 creates them.
            models.Index(fields=["-downloads", "-id"], name="model_sort_downloads"),
            models.Index(fields=["-runs", "-id"], name="model_sort_runs"),
            models.Index(fields=["-updated_at", "-id"], name="model_sort_updated"),
            models.Index(fields=["-created_at", "-id"], name="model_sort_created"),
            models.Index(fields=["name", "id"], name="model_sort_name"),
            models.Index(fields=["task", "-downloads"], name="model_task_downloads"),
            models.Index(fields=["latest_format", "-downloads"], name="model_format_downloads"),
            # An owner's models in the default order, read straight from the index; an owner's list in another
            # order reads that owner's rows from here and sorts them (issue 18: a join on username walked the
            # whole catalog instead).
            models.Index(fields=["owner", "-downloads", "-id"], name="model_owner_downloads"),
        ]

    def __str__(self) -> str:
        return self.slug

    def get_absolute_url(self) -> str:
        return reverse("model-detail", kwargs={"owner": self.owner.username, "name": self.name})

    @property
    def slug(self) -> str:
        return f"{self.owner.username}/{self.name}"

    def is_editable_by(self, user) -> bool:
        return user is not None and user.is_authenticated and (user.pk == self.owner_id or user.is_staff)

    def is_published_for(self, user) -> bool:
        """Until a version is ready, only its owner (and staff) can see a model, even a public one."""
        return bool(self.latest_format) or self.is_editable_by(user)


def version_upload_path(version: ModelVersion, filename: str) -> str:
    # Files are named by content, never by the uploader's file name.
    return f"models/{version.sha256[:2]}/{version.sha256}"


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        VALIDATING = "validating"
        READY = "ready"
        REJECTED = "rejected"

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    file = models.FileField(upload_to=version_upload_path, max_length=255)
    format = models.CharField(max_length=16, choices=Format.choices, blank=True)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.VALIDATING)
    reason = models.TextField(blank=True)
    signature = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    # The uploader's example, a predict body's `inputs`, as JSON text: text, because it may hold NaN or
    # Infinity, which PostgreSQL's json types refuse. Blank when none was given.
    example = models.TextField(blank=True)
    # Text models: the Hugging Face tokenizer.json the server tokenizes with, stored by content beside the
    # model file (blank when none was given).
    tokenizer = models.FileField(max_length=255, blank=True)
    tokenizer_size = models.PositiveBigIntegerField(null=True, blank=True)
    tokenizer_sha256 = models.CharField(max_length=64, blank=True)
    # An optimized version (issue 14): the version it was made from, and what the job measured (method,
    # size_before, size_after, speedup, max_abs_diff, agreement, …). Its row exists from the request on, so
    # the 202 can name it; the job fills in file, size, sha256 and `optimization` once, while `validating`.
    derived_from = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="derivatives"
    )
    optimization = models.JSONField(default=dict, blank=True)
    # GGUF chat models: what the sandbox read from the file's header (architecture, parameters, quantization,
    # context_length, chat_template as a boolean); empty for every other format.
    llm = models.JSONField(default=dict, blank=True)
    # Its top label agrees with the original's too rarely (MODEL_OPTIMIZATION_MIN_AGREEMENT): published, but
    # predict never picks it by default (`selectors.latest_ready_version`), only when asked for by number.
    low_agreement = models.BooleanField(default=False)
    # Encryption at rest (marketplace/encryption.py): each file's data key wrapped by the master key, with its
    # nonce prefix and the master key's id (never the master key). Blank: the file is stored in the clear.
    # Files shared by content between versions share the key. A key rotation re-wraps these in place.
    file_key = models.CharField(max_length=128, blank=True, default="", editable=False)
    tokenizer_key = models.CharField(max_length=128, blank=True, default="", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["model", "number"], name="version_number_unique_per_model")
        ]

    # What a version *is*; validation may fill in format, status, reason and signature, nothing else changes
    # (but an optimized version's file, size and sha256, written once by its job before validation, and
    # `encrypt_model_files`, which points `file` and `tokenizer` at sealed copies of the same content).
    IMMUTABLE_FIELDS = (
        "model_id",
        "number",
        "file",
        "size",
        "sha256",
        "notes",
        "example",
        "tokenizer",
        "tokenizer_size",
        "tokenizer_sha256",
        "derived_from_id",
    )

    def __str__(self) -> str:
        return f"{self.model.slug} v{self.number}"

    def save(self, *args, **kwargs):
        loaded = getattr(self, "_loaded", None)
        if loaded and not self._state.adding:
            changed = [name for name, value in loaded.items() if getattr(self, name) != value]
            if changed:
                raise ValueError(f"Model versions are immutable: cannot change {', '.join(changed)}.")
        super().save(*args, **kwargs)

    @property
    def is_being_optimized(self) -> bool:
        """A derived version whose optimization job has not yet produced its file."""
        return self.derived_from_id is not None and not self.sha256

    @property
    def example_inputs(self) -> dict | list | str | None:
        """A predict body's `inputs`, or for a text model its `text` (a string or a list of strings)."""
        return json.loads(self.example) if self.example else None

    @property
    def example_text(self) -> list[str] | None:
        """The example's texts when it is text (text models), else None."""
        example = self.example_inputs
        if isinstance(example, str):
            return [example]
        if isinstance(example, list) and example and all(isinstance(item, str) for item in example):
            return example
        return None

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded = {
            name: getattr(instance, name)
            for name in cls.IMMUTABLE_FIELDS
            if name in field_names or f"{name}_id" in field_names or name.removesuffix("_id") in field_names
        }
        return instance


class AccessRequest(models.Model):
    """A user's request to run and download a gated model, and the owner's answer.

    One row per (model, user): asking again after a denial reopens it. Denying an approved request revokes
    the access. Whether a user may run a gated model is `selectors.may_run`'s rule alone."""

    class Status(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        DENIED = "denied"

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="access_requests")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="access_requests"
    )
    reason = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["model", "user"], name="access_request_once_per_user")]
        indexes = [models.Index(fields=["model", "status"])]

    def __str__(self) -> str:
        return f"{self.user} → {self.model} ({self.status})"
