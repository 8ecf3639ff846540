"""Model files, tokenizers and large prediction outputs at rest: the one module that reads and writes them.

Everything goes through the default storage (`STORAGES["default"]`, chosen by `MODEL_STORAGE`): a folder
under `MEDIA_ROOT`, or an S3-compatible bucket through django-storages (`s3.py`). Nothing else in the project
opens a stored file.

- Encryption at rest (`encryption.py`): with MODEL_ENCRYPTION_KEY set, `FileWriter` and `save_file_bytes`
  store model files and tokenizers encrypted, each under a data key of its own whose envelope
  (`StoredFile.key`) the caller keeps in the version row; readers pass that envelope back (`open_stream`,
  `read_bytes`, `local_copy`, `download_response`) and get the plaintext, checked chunk by chunk. A blank
  envelope is a file stored in the clear (before the key was set; `encrypt_model_files` seals those).
  Prediction outputs are not encrypted.

- Uploads stream once, to their final place, hashed as they go (`ModelFileUploadHandler`, `store_stream`):
  a new file gets a name of its own (`models/<random>`), never a staging copy that is moved afterwards.
- Readers get a stream (`open_stream`): downloads are streamed to the client, never buffered whole.
- Workers run models from a local cache keyed by sha256, filled from storage and checked (`local_copy`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import tempfile
import time
import uuid
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers, StopUpload
from django.http import FileResponse

from . import encryption

logger = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
HEAD_SIZE = 512


class UploadTooLarge(Exception):
    pass


class FileUnavailable(RuntimeError):
    """A stored file is missing or cannot be read now."""


class FileMismatch(FileUnavailable):
    """A stored file is not the content its sha256 names."""


def check_upload_size(*, size: int | None, limit: int, framing: int = 0) -> None:
    """The one upload size rule: raise UploadTooLarge when `size` (less `framing` bytes) is over `limit`.

    Called with the request's declared length (and MULTIPART_ALLOWANCE) before the body is read, and on the
    bytes counted while a file streams into storage.
    """
    if size is not None and size > limit + framing:
        raise UploadTooLarge(f"The file is over the upload limit: the limit is {limit} bytes.")


@dataclass
class StoredFile:
    name: str
    size: int  # of the content as uploaded (the plaintext)
    sha256: str  # of the content as uploaded
    key: str = ""  # the envelope of its data key (`encryption.Envelope`); blank: stored in the clear


# --- the storages -------------------------------------------------------------------------------------------


class FileSystemWriter:
    """Bytes straight into their final file; `abort` removes what was written."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handle = open(path, "xb")  # noqa: SIM115 - closed by commit or abort

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)

    def commit(self) -> None:
        self.handle.close()

    def abort(self) -> None:
        self.handle.close()
        self.path.unlink(missing_ok=True)


class FileSystemModelStorage(FileSystemStorage):
    """Django's FileSystemStorage, with a streaming writer."""

    def writer(self, name: str) -> FileSystemWriter:
        return FileSystemWriter(Path(self.path(name)))

    def stream(self, name: str) -> BinaryIO:
        return open(self.path(name), "rb")  # noqa: SIM115 - the caller closes it


def storage():
    return default_storage


# --- writing ------------------------------------------------------------------------------------------------


def new_model_file_name() -> str:
    # A name of its own for every upload: the content is known only at the end, and an S3 object cannot be
    # renamed, so uploads are not named by content. Versions with the same content share one file anyway.
    return f"models/{uuid.uuid4().hex}"


def new_tokenizer_file_name() -> str:
    return f"tokenizers/{uuid.uuid4().hex}.json"


class FileWriter:
    """A new stored file, written as its bytes come: hashed, counted against `limit`, its head kept, and
    encrypted on its way to storage when MODEL_ENCRYPTION_KEY is set (the hash and head are of the plaintext).

    `finish()` makes it visible and returns it; `abort()` (or any error from `write`) leaves nothing."""

    def __init__(self, name: str, *, limit: int):
        self.name = name
        self.limit = limit
        self.size = 0
        self.head = b""
        self.digest = hashlib.sha256()
        self.target = storage().writer(name)
        self.envelope = None
        master = encryption.configured_key()
        if master is not None:
            self.envelope, data_key = encryption.new_envelope(master)
            self.target = encryption.EncryptingWriter(self.target, envelope=self.envelope, data_key=data_key)
        self.open = True

    def write(self, chunk: bytes) -> None:
        try:
            self.size += len(chunk)
            check_upload_size(size=self.size, limit=self.limit)
            if len(self.head) < HEAD_SIZE:
                self.head += chunk[: HEAD_SIZE - len(self.head)]
            self.digest.update(chunk)
            self.target.write(chunk)
        except BaseException:
            self.abort()
            raise

    def finish(self) -> StoredFile:
        try:
            self.target.commit()
        except BaseException:
            self.abort()
            raise
        self.open = False
        return StoredFile(
            name=self.name,
            size=self.size,
            sha256=self.digest.hexdigest(),
            key=str(self.envelope) if self.envelope else "",
        )

    def abort(self) -> None:
        if self.open:
            self.open = False
            self.target.abort()


def store_stream(source, *, limit: int) -> tuple[StoredFile, bytes]:
    """Copy a file object (or a Django File) into storage under a new name: the stored file and its head."""
    writer = FileWriter(new_model_file_name(), limit=limit)
    if hasattr(source, "seek"):
        source.seek(0)
    chunks = (
        source.chunks(CHUNK_SIZE) if hasattr(source, "chunks") else iter(lambda: source.read(CHUNK_SIZE), b"")
    )
    try:
        for chunk in chunks:
            writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    return writer.finish(), writer.head


def encrypted_copy(name: str, *, sha256: str, new_name: str) -> StoredFile:
    """A stored file kept in the clear, copied under `new_name` encrypted (MODEL_ENCRYPTION_KEY must be set);
    FileMismatch, leaving no copy, when its content is not `sha256`."""
    writer = FileWriter(new_name, limit=1 << 62)
    try:
        with open_stream(name) as source:
            for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
                writer.write(chunk)
    except BaseException:
        writer.abort()
        raise
    if writer.digest.hexdigest() != sha256:
        writer.abort()
        raise FileMismatch(f"{name} does not match its sha256: left as it is")
    return writer.finish()


def save_bytes(name: str, data: bytes) -> str:
    """Store small content (a prediction's outputs) under `name`, in the clear; the name it got."""
    return storage().save(name, ContentFile(data))


def save_file_bytes(name: str, data: bytes) -> StoredFile:
    """Store small content that is part of a version (a tokenizer) under `name`, encrypted when
    MODEL_ENCRYPTION_KEY is set, like a model file; what was stored, under the name it got."""
    master = encryption.configured_key()
    key = ""
    sealed = data
    if master is not None:
        sealed, envelope = encryption.encrypt_bytes(data, master)
        key = str(envelope)
    saved = storage().save(name, ContentFile(sealed))
    return StoredFile(name=saved, size=len(data), sha256=hashlib.sha256(data).hexdigest(), key=key)


def delete(name: str) -> None:
    if name:
        storage().delete(name)


def exists(name: str) -> bool:
    return bool(name) and storage().exists(name)


def model_files_older_than(cutoff) -> list[str]:
    """Names of stored model files last written before `cutoff` (an aware datetime)."""
    store = storage()
    try:
        _, names = store.listdir("models")
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = f"models/{name}"
        if store.get_modified_time(path) < cutoff:
            found.append(path)
    return found


def abort_unfinished_uploads(cutoff) -> int:
    """Multipart uploads begun before `cutoff` and never finished (a process that died mid-upload), dropped;
    how many. Filesystem storage has none: its partial files are found by `model_files_older_than`."""
    store = storage()
    return store.abort_unfinished_uploads(cutoff) if hasattr(store, "abort_unfinished_uploads") else 0


# --- reading ------------------------------------------------------------------------------------------------


def _open_raw(name: str) -> BinaryIO:
    store = storage()
    if hasattr(store, "stream"):
        return store.stream(name)
    return store.open(name, "rb")


def open_stream(name: str, *, key: str = "") -> BinaryIO:
    """The stored file's content as a stream to read from (close it), decrypted with its envelope `key`
    when it has one. FileNotFoundError when it is not there; FileUnavailable when its master key is not
    configured here; FileMismatch when the ciphertext does not authenticate (also later, from `read`:
    see `decrypt_errors`)."""
    raw = _open_raw(name)
    if not key:
        return raw
    try:
        with decrypt_errors():
            envelope = encryption.Envelope.parse(key)
            return encryption.DecryptingReader(raw, envelope=envelope, data_key=envelope.data_key())
    except BaseException:
        raw.close()
        raise


@contextmanager
def decrypt_errors():
    """The cipher's refusals as this module's errors: a file that does not authenticate is not the one stored
    (FileMismatch, never served); one under a master key not configured here is unavailable."""
    try:
        yield
    except encryption.Tampered as exc:
        raise FileMismatch(f"the stored file was altered or cut short: {exc}") from exc
    except encryption.KeyMissing as exc:
        raise FileUnavailable(f"the stored file cannot be decrypted here: {exc}") from exc


def read_bytes(name: str, *, key: str = "") -> bytes:
    with decrypt_errors(), open_stream(name, key=key) as handle:
        return handle.read()


def download_response(name: str, *, key: str = "", filename: str, size: int) -> FileResponse:
    """The stored file's content streamed to the client as an attachment (never whole in memory).

    An encrypted file of the wrong length, or whose first chunk does not authenticate, raises FileMismatch
    before anything is sent; a later chunk that fails ends the stream short of Content-Length, so the client
    sees an incomplete download, never bytes that did not authenticate."""
    if key and storage().size(name) != encryption.encrypted_size(size):
        raise FileMismatch("the stored file was cut short or extended")
    response = FileResponse(
        open_stream(name, key=key),
        as_attachment=True,
        filename=filename,
        content_type="application/octet-stream",
    )
    response["Content-Length"] = str(size)
    return response


def local_copy(*, name: str, sha256: str, key: str = "") -> Path:
    """The stored file's content in this machine's cache, keyed by its sha256: copied from storage on first
    use and checked against the hash, readable by this user only. FileUnavailable when it cannot be had
    (FileMismatch: not the content stored).

    A file stored encrypted (`key`, its envelope) is decrypted into INFERENCE_DECRYPTED_MODEL_DIR (in memory
    by default), never into the model cache on disk (INFERENCE_MODEL_CACHE_DIR)."""
    try:
        return _local_copy(name=name, sha256=sha256, key=key)
    except OSError as exc:
        # Its message names this machine's folders: the detail goes to the log, never to a caller.
        logger.error("the local copy of %s failed: %r", sha256, exc)
        raise FileUnavailable("the model's file cannot be copied to this server's cache") from exc


def _local_copy(*, name: str, sha256: str, key: str) -> Path:
    cache_dir = _private_folder(Path(settings.INFERENCE_DECRYPTED_MODEL_DIR)) if key else None
    cache_dir = cache_dir or Path(settings.INFERENCE_MODEL_CACHE_DIR)
    path = cache_dir / sha256
    if path.exists():
        if key:
            with suppress(OSError):  # not refreshed, it is only evicted sooner
                os.utime(path)  # its last use, for `_evict_decrypted`
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False, prefix=".part-") as part:
        try:
            with decrypt_errors(), open_stream(name, key=key) as source:
                for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
                    digest.update(chunk)
                    part.write(chunk)
        except FileUnavailable:
            os.unlink(part.name)
            raise
        except Exception as exc:  # a missing file, a storage that does not answer
            os.unlink(part.name)
            # Storage errors name paths, hosts and ports: the detail goes to the log, never to a caller.
            logger.warning("the stored file %s is not available: %r", name, exc)
            raise FileUnavailable("the stored file is not available") from exc
    if digest.hexdigest() != sha256:
        os.unlink(part.name)
        raise FileMismatch("the stored file does not match its sha256")
    _keep_private(part.name)
    os.replace(part.name, path)  # atomic: another process may be copying the same file
    if key:
        _evict_decrypted(cache_dir, keep=path)
    return path


# A copy used this recently stays whatever the budget: a runner may be about to open it.
DECRYPTED_IN_USE_SECONDS = 60


def _evict_decrypted(folder: Path, *, keep: Path) -> None:
    """Decrypted copies are kept in memory (/dev/shm by default): past INFERENCE_DECRYPTED_MODEL_MAX_MB, the
    least recently used go (a later call decrypts its model again)."""
    budget = settings.INFERENCE_DECRYPTED_MODEL_MAX_MB << 20
    copies = []
    for entry in os.scandir(folder):
        if entry.name.startswith(".part-") or not entry.is_file(follow_symlinks=False):
            continue
        found = entry.stat(follow_symlinks=False)
        copies.append((found.st_mtime, found.st_size, entry.path))
    total = sum(size for _, size, _ in copies)
    recent = time.time() - DECRYPTED_IN_USE_SECONDS
    for used, size, copy in sorted(copies):
        if total <= budget:
            break
        if copy == str(keep) or used > recent:
            continue
        try:
            os.unlink(copy)
        except FileNotFoundError:  # another process evicted it first
            pass
        total -= size


def _private_folder(folder: Path) -> Path:
    # Often in /dev/shm, which anyone may write to: a folder someone else made there (or a link to one) is
    # refused, never used.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = os.lstat(folder)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid():
        logger.error("%s is not a folder of this user's: decrypted model files are not kept there", folder)
        raise FileUnavailable("the folder of decrypted model files is not a folder of this user's")
    os.chmod(folder, 0o700)
    return folder


def _keep_private(path: str) -> None:
    # The plaintext of a possibly encrypted model: the worker's, read-only (0440), and readable by the
    # runners' group when they run as another user (INFERENCE_RUNNER_USER, the worker being root).
    # Runners never find it by its path: the worker hands them an open descriptor (`inference.runners.pool`),
    # or binds it read-only into the upload check's sandbox.
    os.chmod(path, 0o440)
    gid = _runner_gid()
    if gid is not None:
        os.chown(path, -1, gid)


def _runner_gid() -> int | None:
    """The group runners run as when not this process's (INFERENCE_RUNNER_USER, the worker being root)."""
    runner_user = getattr(settings, "INFERENCE_RUNNER_USER", "")
    if runner_user and os.geteuid() == 0:
        import pwd

        return pwd.getpwnam(runner_user).pw_gid
    return None


def evict_local_copy(sha256: str) -> None:
    (Path(settings.INFERENCE_MODEL_CACHE_DIR) / sha256).unlink(missing_ok=True)
    (Path(settings.INFERENCE_DECRYPTED_MODEL_DIR) / sha256).unlink(missing_ok=True)


# --- uploads straight from the request ----------------------------------------------------------------------


class StreamedUpload(UploadedFile):
    """The request's model file, already in storage: what forms and serializers see as the `file` field."""

    def __init__(self, stored: StoredFile, head: bytes, *, file_name: str, content_type: str):
        super().__init__(file=None, name=file_name, content_type=content_type, size=stored.size)
        self.stored = stored
        self.head = head

    def open(self, mode=None):
        raise ValueError("A streamed upload is already stored: read it from storage.")

    def close(self):
        pass


class ModelFileUploadHandler(FileUploadHandler):
    """Streams the multipart field `file` into storage as it arrives, hashing it, under the uploader's limit.

    Other fields fall through to the next handlers. Over the limit it stops the upload (`refused` then
    holds the UploadTooLarge) and removes what it wrote. Files it finished are listed in `written`: the
    view's upload scope removes those that no version took (see `services.streamed_uploads`).
    """

    model_field = "file"  # (not `field_name`: the base class keeps the current field there)

    def __init__(self, request=None, *, limit):
        super().__init__(request)
        self.limit_for = limit  # a callable: the uploader is known only once the request is authenticated
        self.writer: FileWriter | None = None
        self.written: list[str] = []
        self.refused: UploadTooLarge | None = None

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, extra)
        user = getattr(self.request, "user", None)
        if field_name != self.model_field or user is None or not user.is_authenticated:
            self.writer = None
            return
        self.writer = FileWriter(new_model_file_name(), limit=self.limit_for())
        raise StopFutureHandlers()  # the later handlers (a temporary file) never see this field

    def receive_data_chunk(self, raw_data, start):
        if self.writer is None:
            return raw_data
        try:
            self.writer.write(raw_data)
        except UploadTooLarge as exc:
            self.writer = None  # write() aborted it
            self.refused = exc
            raise StopUpload(connection_reset=False) from exc
        return None

    def file_complete(self, file_size):
        if self.writer is None:
            return None
        writer, self.writer = self.writer, None
        stored = writer.finish()
        self.written.append(stored.name)
        return StreamedUpload(stored, writer.head, file_name=self.file_name, content_type=self.content_type)

    def upload_interrupted(self):
        self.abort()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()
            self.writer = None
