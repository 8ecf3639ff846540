"""Optimization as a service: a quantized version made from a ready ONNX version by the worker.

`version_optimize` creates the new version's row at once (the next number, `validating`, no file yet) and
queues the job on the model's pool; `optimize_version` (the job) quantizes and measures the source in the
sandbox (`optimization.run_optimization`), stores the result like an upload and validates it. A failure
rejects the version with its reason.
"""

from __future__ import annotations

import logging
import tempfile

from django.conf import settings
from django.core.files import File
from django.db import transaction

from portal import metrics
from portal.celery import app as celery_app
from portal.outages import outage_of

from . import files
from .files import StoredFile, UploadTooLarge
from .models import Format, ModelVersion
from .optimization import is_low_agreement, optimization_record, run_optimization
from .services import (
    UnsupportedModelFile,
    discard_stored_file,
    pool_of,
    store_upload,
    validate_version,
    version_create,
)
from .task_names import OPTIMIZE_VERSION

logger = logging.getLogger(__name__)


class NotOptimizable(UnsupportedModelFile):
    """A version whose format the optimizer does not take (a 415); str(exc) says why and what to do."""


class VersionNotReady(Exception):
    """Only a ready version can be optimized (a 409); str(exc) says what state it is in."""


FORMAT_NAMES = {Format.TORCHSCRIPT: "TorchScript", Format.TORCH_EXPORT: "a torch.export archive"}


def version_optimize(*, source: ModelVersion, method: str, inline: bool = False) -> ModelVersion:
    """Start making a quantized version of `source` with `method`: the new version's row now (the next number,
    `validating`, with the source's example and tokenizer), the work in the worker (here when `inline`).

    Raises VersionNotReady for a version that is not ready, NotOptimizable for one that is not ONNX.
    """
    if source.status != ModelVersion.Status.READY:
        raise VersionNotReady(
            f"Version {source.number} is {source.status}: only a ready version can be optimized."
        )
    if source.format != Format.ONNX:
        raise NotOptimizable(
            f"Version {source.number} is {FORMAT_NAMES.get(source.format, source.format)}: only ONNX "
            "versions can be optimized (ONNX Runtime quantizes ONNX graphs). Export the model to ONNX "
            "(torch.onnx.export) and upload it as a new version, then optimize that one."
        )
    tokenizer = (
        StoredFile(
            name=source.tokenizer.name,
            size=source.tokenizer_size or 0,
            sha256=source.tokenizer_sha256,
            key=source.tokenizer_key,
        )
        if source.tokenizer
        else None
    )
    version = version_create(
        model=source.model,
        # No file yet: the job writes it once, while the version is `validating` (see ModelVersion).
        stored=StoredFile(name="", size=0, sha256=""),
        notes=f"{method} quantization of version {source.number}.",
        example=source.example_inputs,
        tokenizer=tokenizer,
        derived_from=source,
        optimization={"method": method},
    )
    if inline:
        return optimize_version(version_id=version.pk)
    try:
        transaction.on_commit(
            lambda: celery_app.send_task(
                OPTIMIZE_VERSION, kwargs={"version_id": version.pk}, queue=pool_of(version.model)
            )
        )
    except Exception as exc:
        if outage_of(exc) is None:
            raise
        # The broker took nothing: the new version goes (it has no file yet; the tokenizer is the source's)
        # and the caller gets a 503, rather than a version left `validating` for good.
        version.delete()
        raise
    return version


def optimize_version(*, version_id: int) -> ModelVersion | None:
    """Quantize a derived version's source in the sandbox, keep the result as this version's file and what
    was measured, then validate it like any upload (run by the worker). A failure rejects the version with
    the reason; it never raises for a bad model."""
    version = ModelVersion.objects.select_related("model", "derived_from").filter(pk=version_id).first()
    if version is None or version.status != ModelVersion.Status.VALIDATING:
        return version
    if version.sha256:  # the file is there already (a retried task): only validation is left
        return validate_version(version_id=version.pk)
    source = version.derived_from
    if source is None or source.status != ModelVersion.Status.READY:
        return optimization_reject(version, "The version it was to be made from is no longer ready.")
    method = version.optimization.get("method", "")
    with tempfile.TemporaryDirectory(prefix="modelport-optimize-") as workdir:
        # This worker's checked copies, fetched from storage by sha256 (FileUnavailable: the task is retried).
        outcome = run_optimization(
            files.local_copy(name=source.file.name, sha256=source.sha256, key=source.file_key),
            method=method,
            signature=source.signature,
            task=version.model.task,
            example=source.example_inputs,
            tokenizer=files.local_copy(
                name=source.tokenizer.name, sha256=source.tokenizer_sha256, key=source.tokenizer_key
            )
            if source.tokenizer
            else None,
            workdir=workdir,
        )
        if not outcome.ok:
            return optimization_reject(version, f"Optimization failed: {outcome.reason}")
        try:
            with open(outcome.path, "rb") as handle:
                stored = store_upload(
                    file=File(handle, name=outcome.path.name), limit=settings.MODEL_UPLOAD_MAX_BYTES
                )
        except (UploadTooLarge, UnsupportedModelFile) as exc:
            return optimization_reject(version, f"Optimization failed: {exc}")
    optimization = optimization_record(
        method=method, size_before=source.size, size_after=stored.size, measured=outcome.measured
    )
    updated = ModelVersion.objects.filter(
        pk=version.pk, status=ModelVersion.Status.VALIDATING, sha256=""
    ).update(
        file=stored.name,
        size=stored.size,
        sha256=stored.sha256,
        file_key=stored.key,
        optimization=optimization,
        low_agreement=is_low_agreement(optimization),
    )
    if not updated:  # another run of this job got there first
        discard_stored_file(stored.name)
    logger.info("optimized version id=%s (%s): %s", version.pk, version, optimization)
    return validate_version(version_id=version.pk)


def optimization_reject(version: ModelVersion, reason: str) -> ModelVersion:
    ModelVersion.objects.filter(pk=version.pk, status=ModelVersion.Status.VALIDATING).update(
        status=ModelVersion.Status.REJECTED, reason=reason[:2000]
    )
    logger.info("optimization of version id=%s (%s) failed: %s", version.pk, version, reason)
    metrics.validations_total.labels(ModelVersion.Status.REJECTED).inc()
    version.refresh_from_db()
    return version
