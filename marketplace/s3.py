"""Model files in an S3-compatible bucket (`MODEL_STORAGE=s3`): django-storages' S3 backend, configured by its
standard AWS_* settings, with the streaming writer and reader `marketplace.files` uses."""

from __future__ import annotations

from typing import BinaryIO

from botocore.exceptions import ClientError
from storages.backends.s3 import S3Storage
from storages.utils import clean_name

# S3 multipart parts: at least 5 MiB each (but the last), at most 10,000 of them (so up to ~80 GB here).
PART_SIZE = 8 << 20


class S3MultipartWriter:
    """Bytes into an S3 object as a multipart upload, a part at a time: memory holds one part at most.

    A file smaller than a part is one PUT. Until `commit` nothing is visible; `abort` drops the parts."""

    def __init__(self, storage: S3Storage, name: str):
        self.client = storage.connection.meta.client
        self.bucket = storage.bucket_name
        self.key = storage._normalize_name(clean_name(name))
        self.parameters = storage.get_object_parameters(name)
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def write(self, chunk: bytes) -> None:
        self.buffer += chunk
        if len(self.buffer) >= PART_SIZE:
            self._send_part()

    def _send_part(self) -> None:
        if self.upload_id is None:
            started = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key, **self.parameters)
            self.upload_id = started["UploadId"]
        number = len(self.parts) + 1
        sent = self.client.upload_part(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=bytes(self.buffer),
        )
        self.parts.append({"ETag": sent["ETag"], "PartNumber": number})
        self.buffer.clear()

    def commit(self) -> None:
        if self.upload_id is None:
            self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer), **self.parameters
            )
        else:
            if self.buffer:
                self._send_part()
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": self.parts},
            )
        self.buffer = bytearray()

    def abort(self) -> None:
        self.buffer = bytearray()
        if self.upload_id is not None:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            self.upload_id = None


class S3ModelStorage(S3Storage):
    """django-storages' S3 backend with a streaming writer and reader (`marketplace.files` calls them)."""

    def writer(self, name: str) -> S3MultipartWriter:
        return S3MultipartWriter(self, name)

    def stream(self, name: str) -> BinaryIO:
        try:
            answer = self.connection.meta.client.get_object(
                Bucket=self.bucket_name, Key=self._normalize_name(clean_name(name))
            )
        except ClientError as exc:
            raise FileNotFoundError(f"{name}: {exc}") from exc
        return answer["Body"]  # botocore's StreamingBody: read(n) pulls from the connection as it goes

    def abort_unfinished_uploads(self, cutoff) -> int:
        client = self.connection.meta.client
        aborted = 0
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket_name):
            for upload in page.get("Uploads", []):
                if upload["Initiated"] < cutoff:
                    client.abort_multipart_upload(
                        Bucket=self.bucket_name, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted += 1
        return aborted
