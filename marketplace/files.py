"""Model files, tokenizers and large prediction outputs at rest: the one module that reads and writes them.

Everything goes through the default storage (`STORAGES["default"]`, chosen by `MODEL_STORAGE`): a folder
under `MEDIA_ROOT`, or an S3-compatible bucket through django-storages (`s3.py`). Nothing else in the project
opens a stored file, so a layer such as encryption at rest plugs in here, in `FileWriter` and `open_stream`.

- Uploads stream once, to their final place, hashed as they go (`ModelFileUploadHandler`, `store_stream`):
  a new file gets a name of its own (`models/<random>`), never a staging copy that is moved afterwards.
- Readers get a stream (`open_stream`): downloads are streamed to the client, never buffered whole.
- Workers run models from a local cache keyed by sha256, filled from storage and checked (`local_copy`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, StopFutureHandlers, StopUpload
from django.http import FileResponse

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
    size: int
    sha256: str


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


class FileWriter:
    """A new stored file, written as its bytes come: hashed, counted against `limit`, its head kept.

    `finish()` makes it visible and returns it; `abort()` (or any error from `write`) leaves nothing."""

    def __init__(self, name: str, *, limit: int):
        self.name = name
        self.limit = limit
        self.size = 0
        self.head = b""
        self.digest = hashlib.sha256()
        self.target = storage().writer(name)
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
        return StoredFile(name=self.name, size=self.size, sha256=self.digest.hexdigest())

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


def save_bytes(name: str, data: bytes) -> str:
    """Store small content (a tokenizer, a prediction's outputs) under `name`; the name it got."""
    return storage().save(name, ContentFile(data))


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


def open_stream(name: str) -> BinaryIO:
    """The stored file as a stream to read from (close it); FileNotFoundError when it is not there."""
    store = storage()
    if hasattr(store, "stream"):
        return store.stream(name)
    return store.open(name, "rb")


def read_bytes(name: str) -> bytes:
    with open_stream(name) as handle:
        return handle.read()


def download_response(name: str, *, filename: str, size: int) -> FileResponse:
    """The stored file streamed to the client as an attachment (never whole in memory)."""
    response = FileResponse(
        open_stream(name), as_attachment=True, filename=filename, content_type="application/octet-stream"
    )
    response["Content-Length"] = str(size)
    return response


def local_copy(*, name: str, sha256: str) -> Path:
    """The stored file in this machine's cache (`INFERENCE_MODEL_CACHE_DIR`), keyed by its sha256: copied from
    storage on first use and checked against the hash. FileUnavailable when it cannot be had."""
    cache_dir = Path(settings.INFERENCE_MODEL_CACHE_DIR)
    path = cache_dir / sha256
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False, prefix=".part-") as part:
        try:
            with open_stream(name) as source:
                for chunk in iter(lambda: source.read(CHUNK_SIZE), b""):
                    digest.update(chunk)
                    part.write(chunk)
        except Exception as exc:  # a missing file, a storage that does not answer
            os.unlink(part.name)
            raise FileUnavailable(f"the stored file is not available: {exc}") from exc
    if digest.hexdigest() != sha256:
        os.unlink(part.name)
        raise FileMismatch("the stored file does not match its sha256")
    os.chmod(part.name, 0o644)  # runners may run as another user: they read it, nothing more
    os.replace(part.name, path)  # atomic: another process may be copying the same file
    return path


def evict_local_copy(sha256: str) -> None:
    (Path(settings.INFERENCE_MODEL_CACHE_DIR) / sha256).unlink(missing_ok=True)


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
