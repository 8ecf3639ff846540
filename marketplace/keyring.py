"""The master key against the catalog: the start-up check, key rotation, sealing files stored in the clear.

Each version row holds the envelopes of its files' data keys (`file_key`, `tokenizer_key`; see `encryption`).
The master keys come from the environment only: MODEL_ENCRYPTION_KEY, and MODEL_ENCRYPTION_KEY_OLD while a
rotation is under way (both are read then, so the service keeps running through it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.db.models import Q

from . import encryption, files
from .models import ModelVersion

logger = logging.getLogger(__name__)

# The two files of a version: (file column, envelope column, sha256 column, how a new copy is named).
FILE_COLUMNS = (
    ("file", "file_key", "sha256", files.new_model_file_name),
    ("tokenizer", "tokenizer_key", "tokenizer_sha256", files.new_tokenizer_file_name),
)


def _encrypted_rows():
    return ModelVersion.objects.exclude(file_key="", tokenizer_key="")


# --- the start-up check -------------------------------------------------------------------------------------


def startup_problem() -> str | None:
    """Why this process must not start with the master keys it was given, or None.

    It must not when files are stored encrypted and MODEL_ENCRYPTION_KEY is unset, or when some are under a
    master key it was not given, or when a sample data key does not unwrap (a key that is not the one named).
    A database not migrated or not reachable yet cannot tell: then None (reads fail later, clearly)."""
    try:
        keys = encryption.known_keys()
        current = encryption.configured_key()
    except ImproperlyConfigured as exc:
        return str(exc)
    try:
        encrypted = _encrypted_rows()
        if not encrypted.exists():
            return None
        if current is None:
            return (
                f"{encrypted.count()} model version(s) have files stored encrypted, but "
                f"{encryption.KEY_SETTING} is not set: set it to the master key they were encrypted with "
                "(base64). This process does not start without it."
            )
        # A row with an envelope, in either column, under a key id that is not one of ours.
        strangers = encrypted.exclude(_under_any(keys, "file_key") & _under_any(keys, "tokenizer_key"))
        stranger = strangers.values_list("file_key", "tokenizer_key").first()
        if stranger is not None:
            envelope = next(text for text in stranger if text and not _is_under(text, keys))
            return (
                f"Model files are encrypted under master key id {_key_id_of(envelope)}, but the configured "
                f"key ({encryption.KEY_SETTING}, {encryption.OLD_KEY_SETTING}) ids are {', '.join(keys)}: "
                f"{encryption.KEY_SETTING} is the wrong key. Set the master key the files were encrypted "
                f"with (while rotating, the new one in {encryption.KEY_SETTING} and the old one in "
                f"{encryption.OLD_KEY_SETTING})."
            )
        for key in keys.values():
            sample = encrypted.filter(file_key__startswith=encryption.key_id_prefix(key)).first()
            if sample is not None:
                try:
                    encryption.Envelope.parse(sample.file_key).data_key(keys)
                except encryption.Tampered as exc:
                    return (
                        f"The master key with id {key.id} cannot unwrap the data key of {sample}: {exc}. "
                        "Set the master key the files were encrypted with."
                    )
    except DatabaseError as exc:
        logger.warning("encryption keys not checked at start-up: the database cannot tell (%s)", exc)
        return None
    return None


def _under_any(keys: dict, column: str) -> Q:
    """Rows whose `column` is blank or an envelope under one of `keys`."""
    found = Q(**{column: ""})
    for key in keys.values():
        found |= Q(**{f"{column}__startswith": encryption.key_id_prefix(key)})
    return found


def _is_under(envelope: str, keys: dict) -> bool:
    return any(envelope.startswith(encryption.key_id_prefix(key)) for key in keys.values())


def _key_id_of(envelope: str) -> str:
    parts = envelope.split(".")
    return parts[1] if len(parts) > 1 else "?"


def check_encryption_keys(app_configs=None, **kwargs):
    """A start-up check (`portal.startup`): gunicorn and the Celery worker refuse to start on it, runserver,
    the gRPC server and every management command that runs the system checks too."""
    from django.core.checks import Error

    problem = startup_problem()
    return [Error(problem, id="marketplace.E001")] if problem else []


# --- rotation -----------------------------------------------------------------------------------------------


@dataclass
class Rotation:
    rewrapped: int = 0  # envelopes re-wrapped now
    current: int = 0  # envelopes already under the new key (an earlier, interrupted run)
    failed: list[str] = field(default_factory=list)  # rows whose envelopes neither key opens


def keys_rotate() -> Rotation:
    """Re-wrap every data key under MODEL_ENCRYPTION_KEY, unwrapping with MODEL_ENCRYPTION_KEY_OLD: the files
    are not touched. Each row in its own transaction, so it is safe to stop and run again: rows already under
    the new key (known by its id) are counted and left alone."""
    new = encryption.configured_key()
    old = encryption.configured_key(encryption.OLD_KEY_SETTING)
    if new is None:
        raise ImproperlyConfigured(f"Set {encryption.KEY_SETTING} to the new master key.")
    rotation = Rotation()
    prefix = encryption.key_id_prefix(new)
    done = {new.id: new}
    pending = _encrypted_rows().exclude(_under_any(done, "file_key") & _under_any(done, "tokenizer_key"))
    rotation.current = _encrypted_rows().count() - pending.count()
    if pending.exists() and old is None:
        raise ImproperlyConfigured(
            f"{pending.count()} version(s) have keys wrapped by another master key: set "
            f"{encryption.OLD_KEY_SETTING} to it."
        )
    for pk in pending.values_list("pk", flat=True).order_by("pk"):
        try:
            with transaction.atomic():
                row = ModelVersion.objects.select_for_update().filter(pk=pk).first()
                if row is None:
                    continue
                changes = {}
                for _, column, _, _ in FILE_COLUMNS:
                    text = getattr(row, column)
                    if text and not text.startswith(prefix):
                        changes[column] = str(encryption.Envelope.parse(text).rewrapped(old=old, new=new))
                ModelVersion.objects.filter(pk=pk).update(**changes)
        except encryption.Tampered as exc:
            rotation.failed.append(f"version id {pk}: {exc}")
            continue
        rotation.rewrapped += 1
    return rotation


# --- sealing files stored before the key was set ------------------------------------------------------------


@dataclass
class Sealing:
    sealed: list[str] = field(default_factory=list)  # names of the clear files now stored encrypted
    missing: list[str] = field(default_factory=list)  # clear files a version names but storage lacks
    failed: list[str] = field(default_factory=list)  # clear files not matching their sha256: left alone


def clear_files_seal() -> Sealing:
    """Store every file kept in the clear (uploaded before MODEL_ENCRYPTION_KEY was set) encrypted: a new
    copy, checked against its sha256 as it is written, then every version naming the clear file points to the
    copy (one transaction per file), then the clear file is deleted. Safe to stop and run again."""
    master = encryption.configured_key()
    if master is None:
        raise ImproperlyConfigured(f"Set {encryption.KEY_SETTING} first: the files are sealed under it.")
    sealing = Sealing()
    for column, key_column, sha_column, new_name in FILE_COLUMNS:
        clear = ModelVersion.objects.filter(**{key_column: ""}).exclude(**{column: ""})
        for name, sha256 in clear.values_list(column, sha_column).distinct().order_by(column):
            if not files.exists(name):
                sealing.missing.append(name)  # a rejected version's file, dropped with its verdict
                continue
            try:
                stored = files.encrypted_copy(name, sha256=sha256, new_name=new_name())
            except files.FileMismatch as exc:
                sealing.failed.append(str(exc))
                continue
            with transaction.atomic():
                moved = ModelVersion.objects.filter(**{column: name, key_column: ""}).update(
                    **{column: stored.name, key_column: stored.key}
                )
            files.delete(name if moved else stored.name)
            if moved:
                sealing.sealed.append(name)
    return sealing
