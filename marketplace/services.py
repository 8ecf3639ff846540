"""Catalog writes: storing uploads, publishing versions, validating them, deleting models."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import replace
from datetime import timedelta

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from portal import metrics, process_cache
from portal.celery import app as celery_app
from portal.outages import outage_of
from portal.quotas import plan_upload_limit_for, private_model_limit_for
from portal.usage import usage_keep_without_versions

from . import encryption, files
from .files import StoredFile, UploadTooLarge, check_upload_size
from .models import AccessRequest, Model, ModelVersion, Task, Visibility
from .sandbox.tokenizing import tokenizer_check
from .sandbox.validation import Inspection, inspect_model_file, sniff_upload
from .selectors import access_cache_key, latest_ready_version
from .task_names import OPTIMIZE_VERSION, VALIDATE_VERSION

logger = logging.getLogger(__name__)

__all__ = ["StoredFile", "UploadTooLarge", "check_upload_size"]  # re-exported: the views catch them here


class UnsupportedModelFile(Exception):
    """The file is not a supported, valid model; str(exc) is the reason shown to the uploader."""


class UnsupportedTokenizer(UnsupportedModelFile):
    """The tokenizer.json does not load or encode; str(exc) is the reason (a 415, like a bad model file)."""


class TokenizerNotForTask(Exception):
    """A tokenizer sent with a model whose task takes no text; str(exc) says which tasks do (a 400)."""


class ModelNameTaken(Exception):
    pass


class PrivateModelLimitReached(Exception):
    """The owner's plan allows no more private models; str(exc) says how many it allows."""


def check_private_model_allowance(*, owner, excluding: Model | None = None) -> None:
    limit = private_model_limit_for(owner)
    owned = Model.objects.filter(owner=owner, visibility=Visibility.PRIVATE)
    if excluding is not None:
        owned = owned.exclude(pk=excluding.pk)
    if owned.count() >= limit:
        raise PrivateModelLimitReached(
            f"Your plan allows {limit} private model(s) and you have {owned.count()}: "
            "make one public or delete one first."
        )


def effective_upload_limit_for(user) -> int:
    """The largest model file `user` may upload, in bytes: the plan's limit, never above the server's."""
    return min(plan_upload_limit_for(user), settings.MODEL_UPLOAD_MAX_BYTES)


# Multipart framing around the file: a request this much over the limit is refused before it is read.
MULTIPART_ALLOWANCE = 1 << 20


def store_upload(*, file, limit: int) -> StoredFile:
    """Keep an uploaded model file: streamed into storage once, hashed as it went (`files`).

    `file` is the request's `StreamedUpload` (stored by the upload handler already) or any file object,
    copied in here. Refuses (UnsupportedModelFile) what the first bytes show is not a model, and
    (UploadTooLarge) files over `limit`, leaving nothing behind. Content kept for another version is shared.
    """
    check_upload_size(size=file.size, limit=limit)
    if isinstance(file, files.StreamedUpload):
        stored, head = file.stored, file.head
    else:
        stored, head = files.store_stream(file, limit=limit)
    try:
        check_upload_size(size=stored.size, limit=limit)
        reason = sniff_upload(head)
        if reason:
            raise UnsupportedModelFile(reason)
    except BaseException:
        files.delete(stored.name)
        raise
    stored = _share_stored_content(stored)
    metrics.uploads_total.inc()
    metrics.upload_bytes_total.inc(stored.size)
    return stored


def _share_stored_content(stored: StoredFile) -> StoredFile:
    """The same content already kept for a live version: use that file (and the envelope of its data key) and
    drop the new copy. Only a file stored as this one is: an encrypted upload shares only a file whose key is
    wrapped by the same master key (so never a clear copy, nor one this process could not open)."""
    candidates = (
        ModelVersion.objects.filter(sha256=stored.sha256)
        .exclude(status=ModelVersion.Status.REJECTED)
        .exclude(file=stored.name)
    )
    if stored.key:
        candidates = candidates.filter(file_key__startswith=encryption.key_id_prefix_of(stored.key))
    else:
        candidates = candidates.filter(file_key="")
    existing = candidates.values_list("file", "file_key").first()
    if existing and files.exists(existing[0]):
        files.delete(stored.name)
        return replace(stored, name=existing[0], key=existing[1])
    return stored


@contextmanager
def streamed_uploads(request):
    """Around an upload view: the model file streams into storage as the request body is read, and whatever it
    wrote that no version took when the view is done (an invalid form, a refusal, an error) is removed.

    Entered before anything reads the body (the CSRF check does: see `views.streams_model_uploads`)."""
    handler = files.ModelFileUploadHandler(request, limit=lambda: effective_upload_limit_for(request.user))
    request.upload_handlers.insert(0, handler)
    request.model_upload = handler
    try:
        yield handler
    finally:
        handler.abort()
        for name in handler.written:
            discard_stored_file(name)


def refuse_stopped_upload(request) -> None:
    """UploadTooLarge when the upload handler stopped the request's model file at the limit."""
    handler = getattr(request, "model_upload", None)
    if handler is not None and handler.refused is not None:
        raise handler.refused


def store_tokenizer(*, file) -> StoredFile:
    """Check an uploaded tokenizer.json (it must load and encode a sample) and store it by content.

    Read whole, but never more than TOKENIZER_MAX_BYTES (UploadTooLarge): the `tokenizers` library parses it
    in this process, which is safe for data of a bounded size. UnsupportedTokenizer says why it is unusable.
    """
    limit = settings.TOKENIZER_MAX_BYTES
    if file.size is not None and file.size > limit:
        raise UploadTooLarge(f"The tokenizer is over its size limit: the limit is {limit} bytes.")
    if hasattr(file, "seek"):
        file.seek(0)
    raw = file.read(limit + 1)
    if len(raw) > limit:
        raise UploadTooLarge(f"The tokenizer is over its size limit: the limit is {limit} bytes.")
    reason = tokenizer_check(raw)
    if reason:
        raise UnsupportedTokenizer(reason)
    sha256 = hashlib.sha256(raw).hexdigest()
    # Shared by content with a version that has it stored the same way (clear, or encrypted under the same
    # master key: then with its envelope); else a file of its own, whose name says nothing of its content.
    candidates = ModelVersion.objects.filter(tokenizer_sha256=sha256).exclude(
        status=ModelVersion.Status.REJECTED
    )
    master = encryption.configured_key()
    if master is not None:
        candidates = candidates.filter(tokenizer_key__startswith=encryption.key_id_prefix(master))
    else:
        candidates = candidates.filter(tokenizer_key="")
    existing = candidates.values_list("tokenizer", "tokenizer_key").first()
    if existing and files.exists(existing[0]):
        return StoredFile(name=existing[0], size=len(raw), sha256=sha256, key=existing[1])
    return files.save_file_bytes(files.new_tokenizer_file_name(), raw)


def check_tokenizer_task(*, task: str) -> None:
    if task not in TEXT_TASKS:
        raise TokenizerNotForTask(
            f"A tokenizer is for text models: set the task to one of {', '.join(TEXT_TASKS)}."
        )


TEXT_TASKS = (Task.TEXT_CLASSIFICATION.value, Task.FEATURE_EXTRACTION.value)


def discard_stored_file(name: str) -> None:
    """Delete a stored file unless another version still uses the same content."""
    if name and not ModelVersion.objects.filter(file=name).exists():
        files.delete(name)


def discard_stored_tokenizer(name: str) -> None:
    if name and not ModelVersion.objects.filter(tokenizer=name).exists():
        files.delete(name)


# What an upload names the same way in the web form and the API serializer, as model_create takes it.
UPLOAD_FIELDS = (
    "name",
    "task",
    "description",
    "tags",
    "license",
    "labels",
    "preprocessing",
    "visibility",
    "gated",
    "notes",
    "example",
)


MODEL_CACHE_PREFIX = "marketplace:model:"


def model_cache_key(model_id: int) -> str:
    return f"{MODEL_CACHE_PREFIX}{model_id}"


def model_changed(*, model_id: int) -> None:
    """Forget what every process keeps about the model (the version look-up of `inference.services`), now and
    at commit: a published version, a visibility or gate change, or a deletion counts on the next call."""
    process_cache.forget([model_cache_key(model_id)])


def model_create_from_upload(*, owner, data: dict, stored: StoredFile, tokenizer: StoredFile | None):
    """`model_create` from an upload's cleaned fields (a form's `cleaned_data`, a serializer's
    `validated_data`)."""
    return model_create(
        owner=owner,
        stored=stored,
        tokenizer=tokenizer,
        signature_hint=data["signature"] or None,
        **{field: data[field] for field in UPLOAD_FIELDS},
    )


def model_create(
    *,
    owner,
    name: str,
    stored: StoredFile,
    task: str = Task.OTHER,
    description: str = "",
    tags: list[str] | None = None,
    license: str = "",
    labels: list[str] | None = None,
    preprocessing: dict | None = None,
    visibility: str = Visibility.PUBLIC,
    gated: bool = False,
    notes: str = "",
    signature_hint: dict | None = None,
    example: dict | list | str | None = None,
    tokenizer: StoredFile | None = None,
) -> ModelVersion:
    """Create a model and its version 1 (status `validating`); the caller then has it validated."""
    if visibility == Visibility.PRIVATE:
        try:
            check_private_model_allowance(owner=owner)
        except PrivateModelLimitReached:
            discard_stored_file(stored.name)
            discard_stored_tokenizer(tokenizer.name if tokenizer else "")
            raise
    try:
        with transaction.atomic():
            model = Model.objects.create(
                owner=owner,
                name=name,
                task=task,
                description=description,
                tags=tags or [],
                license=license,
                labels=labels or [],
                preprocessing=preprocessing or {},
                visibility=visibility,
                gated=gated,
            )
            return version_create(
                model=model,
                stored=stored,
                notes=notes,
                signature_hint=signature_hint,
                example=example,
                tokenizer=tokenizer,
            )
    except IntegrityError as exc:
        discard_stored_file(stored.name)
        discard_stored_tokenizer(tokenizer.name if tokenizer else "")
        raise ModelNameTaken(f"You already have a model named {name!r}.") from exc


def version_create(
    *,
    model: Model,
    stored: StoredFile,
    notes: str = "",
    signature_hint: dict | None = None,
    example: dict | list | str | None = None,
    tokenizer: StoredFile | None = None,
    derived_from: ModelVersion | None = None,
    optimization: dict | None = None,
) -> ModelVersion:
    with transaction.atomic():
        # The row lock serialises concurrent uploads to one model: numbers go 1, 2, 3… without clashes.
        Model.objects.select_for_update().filter(pk=model.pk).first()
        last = model.versions.aggregate(last=Max("number"))["last"] or 0
        return ModelVersion.objects.create(
            model=model,
            number=last + 1,
            file=stored.name,
            size=stored.size,
            sha256=stored.sha256,
            notes=notes,
            signature={"hint": signature_hint} if signature_hint else {},
            example=json.dumps(example) if example is not None else "",
            tokenizer=tokenizer.name if tokenizer else "",
            tokenizer_size=tokenizer.size if tokenizer else None,
            tokenizer_sha256=tokenizer.sha256 if tokenizer else "",
            derived_from=derived_from,
            optimization=optimization or {},
            file_key=stored.key,
            tokenizer_key=tokenizer.key if tokenizer else "",
        )


def version_publish(
    *, version: ModelVersion, wait: float | None = None, inline: bool = False
) -> ModelVersion:
    """Have `version` validated, by the worker (or here when `inline`), waiting up to `wait` s.

    Returns the version as it stands then: `ready`, `rejected`, or still `validating`. A rejected first
    version     takes its model with it (the returned row keeps its reason, but is no longer in the database).
    """
    if inline:
        version = validate_version(version_id=version.pk)
        if version.status == ModelVersion.Status.REJECTED:
            discard_unpublished_model(version=version)
        return version
    try:
        transaction.on_commit(lambda: validation_enqueue(version=version))
    except Exception as exc:
        if outage_of(exc) is None:
            raise
        # The broker took nothing: the upload is undone (the caller gets a 503) rather than left validating.
        version_withdraw(version=version)
        raise
    deadline = time.monotonic() + (settings.MODEL_UPLOAD_WAIT_SECONDS if wait is None else wait)
    delay = 0.05
    while time.monotonic() < deadline:
        current = ModelVersion.objects.filter(pk=version.pk).first()
        if current is not None and current.status != ModelVersion.Status.VALIDATING:
            if current.status == ModelVersion.Status.REJECTED:
                discard_unpublished_model(version=current)
            return current
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    return version


def pool_of(model: Model) -> str:
    """The Celery queue of the workers a model runs on (big models on big machines): the default queue
    unless an admin placed it."""
    return model.queue or settings.INFERENCE_JOB_QUEUE


def validation_enqueue(*, version: ModelVersion) -> None:
    """Queue the version's validation on its model's pool; a version still to be made by the optimizer
    goes to the optimizer (`optimizing`), which validates what it makes."""
    task = OPTIMIZE_VERSION if version.is_being_optimized else VALIDATE_VERSION
    celery_app.send_task(task, kwargs={"version_id": version.pk}, queue=pool_of(version.model))


def validate_version(*, version_id: int) -> ModelVersion | None:
    """Inspect a validating version in the sandbox and record the verdict (run by the worker)."""
    version = ModelVersion.objects.select_related("model").filter(pk=version_id).first()
    if version is None or version.status != ModelVersion.Status.VALIDATING:
        return version
    hint = version.signature.get("hint") if isinstance(version.signature, dict) else None
    try:
        # This worker's cached copies, fetched from storage by sha256 and checked: the web's disk is not here.
        # Storage out of reach raises FileUnavailable, and the task is tried again.
        path = files.local_copy(name=version.file.name, sha256=version.sha256, key=version.file_key)
        tokenizer = (
            files.local_copy(
                name=version.tokenizer.name, sha256=version.tokenizer_sha256, key=version.tokenizer_key
            )
            if version.tokenizer
            else None
        )
    except files.FileMismatch as exc:
        inspection = Inspection(ok=False, reason=f"The stored file is not the one uploaded: {exc}.")
    else:
        inspection = inspect_model_file(
            path, signature_hint=hint, example=version.example_inputs, tokenizer=tokenizer
        )
    if inspection.ok:
        version.status = ModelVersion.Status.READY
        version.format = inspection.format
        # A GGUF model's header summary comes with its signature from the sandbox; it is kept apart.
        version.signature = dict(inspection.signature)
        version.llm = version.signature.pop("llm", {})
        # A ready version's reason is its caveat, e.g. "trial run skipped: … — give an `example` to check it".
        version.reason = inspection.note
    else:
        version.status = ModelVersion.Status.REJECTED
        version.reason = inspection.reason
        version.signature = {}
    with transaction.atomic():
        updated = ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.VALIDATING).update(
            status=version.status,
            format=version.format,
            signature=version.signature,
            reason=version.reason,
            llm=version.llm,
        )
        if updated and inspection.ok:
            latest = latest_ready_version(version.model)
            Model.objects.filter(pk=version.model_id).update(
                latest_format=latest.format if latest else "", updated_at=timezone.now()
            )
            model_changed(model_id=version.model_id)
    logger.info("validated version id=%s (%s): %s %s", version.pk, version, version.status, inspection.reason)
    if updated:
        metrics.validations_total.labels(version.status).inc()
    if not inspection.ok:
        discard_file_of_rejected(version)
    return version


def stored_files_sweep(*, older_than: timedelta) -> tuple[list[str], int]:
    """Remove what uploads left behind when their process died mid-way (one that fails cleanly removes its
    own): model files older than `older_than` that no version refers to, and unfinished S3 multipart uploads
    begun that long ago. Returns the files removed and the number of uploads aborted."""
    cutoff = timezone.now() - older_than
    candidates = files.model_files_older_than(cutoff)
    kept = set(ModelVersion.objects.filter(file__in=candidates).values_list("file", flat=True))
    removed = [name for name in candidates if name not in kept]
    for name in removed:
        files.delete(name)
    return removed, files.abort_unfinished_uploads(cutoff)


def discard_file_of_rejected(version: ModelVersion) -> None:
    # A rejected file is never served: keep the record (number, reason, hash), drop the bytes.
    if not ModelVersion.objects.filter(file=version.file.name).exclude(pk=version.pk).exists():
        files.delete(version.file.name)
    files.evict_local_copy(version.sha256)
    if version.tokenizer and (
        not ModelVersion.objects.filter(tokenizer=version.tokenizer.name).exclude(pk=version.pk).exists()
    ):
        files.delete(version.tokenizer.name)


def version_withdraw(*, version: ModelVersion) -> None:
    """Undo an upload whose validation could not be queued: its version, its file, and a model it would
    have been the first version of."""
    if not version.model.versions.exclude(pk=version.pk).exists():
        discard_unpublished_model(version=version)
        return
    name, tokenizer = version.file.name, version.tokenizer.name
    version.delete()
    discard_stored_file(name)
    discard_stored_tokenizer(tokenizer)


def validations_resume(*, older_than: timedelta) -> list[int]:
    """Queue again the validation of versions still `validating` long after their upload, whose task was lost
    (a broker restarted without persistence); each at most once per `older_than`. A duplicate is harmless:
    `validate_version` acts only on a version that is still validating. Returns the ids queued."""
    stale = ModelVersion.objects.select_related("model").filter(
        status=ModelVersion.Status.VALIDATING, created_at__lt=timezone.now() - older_than
    )[:100]
    queued = []
    for version in stale:
        if cache.add(f"validation-resumed:{version.pk}", 1, timeout=older_than.total_seconds() or 1):
            validation_enqueue(version=version)
            queued.append(version.pk)
    if queued:
        logger.warning("validations queued again (their task was lost): %s", queued)
    return queued


def discard_unpublished_model(*, version: ModelVersion) -> None:
    """A rejected first version leaves nothing behind: delete its model and file."""
    model = version.model
    if model.versions.exclude(pk=version.pk).exists():
        return
    name, tokenizer = version.file.name, version.tokenizer.name
    model.delete()
    discard_stored_file(name)
    discard_stored_tokenizer(tokenizer)


def model_update(*, model: Model, **fields) -> Model:
    """Change a model's metadata; making it private needs room in the owner's private-model allowance."""
    # Compared with the stored row: a ModelForm has already copied the new values onto `model`.
    becomes_private = (
        fields.get("visibility") == Visibility.PRIVATE
        and not Model.objects.filter(pk=model.pk, visibility=Visibility.PRIVATE).exists()
    )
    if becomes_private:
        check_private_model_allowance(owner=model.owner, excluding=model)
    for key, value in fields.items():
        setattr(model, key, value)
    # Only the edited columns: the counters (downloads, runs) are bumped concurrently by other requests, and
    # writing back the values read here would lose those increments.
    model.save(update_fields=[*fields, "updated_at"])
    model_changed(model_id=model.pk)
    return model


def model_delete(*, model: Model) -> None:
    """Delete a model, its versions and their files (unless another version shares the same content)."""
    names = list(model.versions.values_list("file", "tokenizer"))
    with transaction.atomic():
        usage_keep_without_versions(model.versions.values_list("id", flat=True))
        model_changed(model_id=model.pk)
        model.delete()
    for name, tokenizer in names:
        discard_stored_file(name)
        discard_stored_tokenizer(tokenizer)


def version_record_download(*, version: ModelVersion) -> None:
    Model.objects.filter(pk=version.model_id).update(downloads=F("downloads") + 1)


def models_record_runs(*, runs: dict[int, int]) -> None:
    """Add finished runs to models' counters: {model id: runs}. Called by inference's record step."""
    for model_id, count in sorted(runs.items()):
        Model.objects.filter(pk=model_id).update(runs=F("runs") + count)


# --- gated models: access requests --------------------------------------------------------------------------


class AccessRequestRefused(Exception):
    """Asking is not possible (the model is not gated, or the caller owns it); str(exc) says why (a 400)."""


def access_request_create(*, model: Model, user, reason: str = "") -> tuple[AccessRequest, bool]:
    """Ask for access to a gated model: (request, created). Asking again after a denial reopens the request
    (pending, with the new reason); a pending or approved request is returned as it is."""
    if not model.gated:
        raise AccessRequestRefused(f"{model.slug} is not gated: anyone who can see it may run it.")
    if model.is_editable_by(user):
        raise AccessRequestRefused(f"You own {model.slug}: you need no access request.")
    with transaction.atomic():
        request, created = AccessRequest.objects.select_for_update().get_or_create(
            model=model, user=user, defaults={"reason": reason}
        )
        if not created and request.status == AccessRequest.Status.DENIED:
            request.status, request.reason, request.decided_at = AccessRequest.Status.PENDING, reason, None
            request.save(update_fields=["status", "reason", "decided_at"])
            created = True
    return request, created


def access_request_decide(*, request: AccessRequest, approve: bool) -> AccessRequest:
    """The owner's answer. Denying an approved request revokes the access, from the next call on: the cached
    grant is forgotten in every process (`process_cache.forget`)."""
    request.status = AccessRequest.Status.APPROVED if approve else AccessRequest.Status.DENIED
    request.decided_at = timezone.now()
    request.save(update_fields=["status", "decided_at"])
    process_cache.forget([access_cache_key(model_id=request.model_id, user_id=request.user_id)])
    return request
