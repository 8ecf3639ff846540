"""Encryption at rest for model files and tokenizers (`MODEL_ENCRYPTION_KEY`), with `cryptography`.

Envelope encryption: every stored file has a random 256-bit data key of its own, and only that key, wrapped by
the master key (AES key wrap, RFC 3394), is kept, in the version row, as the file's *envelope*:
`1.<master key id>.<nonce prefix>.<wrapped data key>` (base64url). The master key is read from the environment
and never written anywhere; its id (an HMAC of a constant under the key) tells which key wrapped a row, so a
rotation can tell rows it already re-wrapped, and start-up can name a key that does not fit.

The file itself is AES-256-GCM in the STREAM construction (Hoang, Reyhanitabar, Rogaway and Vizár, "Online
Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015; Tink's streaming AEAD and age lay it
out the same way): the plaintext is cut into 1 MiB chunks, each sealed as its own GCM message under the nonce
`prefix (7 random bytes) || chunk counter (4 bytes, big-endian) || last-chunk flag (1 byte)`. A chunk is
checked before any of its bytes are released, memory stays at a chunk or two whatever the file's size, and
since the counter and the flag are part of every tag, chunks cannot be reordered, dropped, or cut off.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

FORMAT_VERSION = "1"
CHUNK_SIZE = 1 << 20
TAG_SIZE = 16
NONCE_PREFIX_SIZE = 7
MAX_CHUNKS = 1 << 32
# Binds every chunk to this format: a chunk of another scheme never decrypts as one of ours.
ASSOCIATED_DATA = b"modelport stream v1"

KEY_SETTING = "MODEL_ENCRYPTION_KEY"
OLD_KEY_SETTING = "MODEL_ENCRYPTION_KEY_OLD"


class KeyMissing(Exception):
    """A file is encrypted under a master key that is not configured here; str(exc) says which."""


class Tampered(Exception):
    """The ciphertext does not authenticate: altered, truncated, extended, or under another key."""


# --- the master key -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MasterKey:
    secret: bytes
    id: str

    @classmethod
    def from_text(cls, text: str, *, setting: str = KEY_SETTING) -> MasterKey:
        try:
            secret = base64.b64decode(
                text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_", validate=True
            )
        except (binascii.Error, ValueError):
            secret = b""
        if len(secret) != 32:
            raise ImproperlyConfigured(
                f"{setting} must be 32 random bytes, base64-encoded (44 characters), e.g. from "
                '`python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"`.'
            )
        return cls(secret=secret, id=key_id(secret))

    def wrap(self, data_key: bytes) -> bytes:
        return aes_key_wrap(self.secret, data_key)

    def unwrap(self, wrapped: bytes) -> bytes:
        try:
            return aes_key_unwrap(self.secret, wrapped)
        except InvalidUnwrap as exc:
            raise Tampered(f"the data key does not unwrap with master key {self.id}") from exc


def key_id(secret: bytes) -> str:
    # Names the key without revealing it: an HMAC under the key, cut to 64 bits.
    return hmac.new(secret, b"modelport model-file master key id", hashlib.sha256).hexdigest()[:16]


def configured_key(setting: str = KEY_SETTING) -> MasterKey | None:
    """The master key in `setting` (MODEL_ENCRYPTION_KEY or MODEL_ENCRYPTION_KEY_OLD), None when unset;
    ImproperlyConfigured when it is not 32 bytes of base64."""
    text = getattr(settings, setting, "") or ""
    return MasterKey.from_text(text, setting=setting) if text.strip() else None


def known_keys() -> dict[str, MasterKey]:
    """The master keys this process holds, by id: the current one and, during a rotation, the old one."""
    keys = [configured_key(KEY_SETTING), configured_key(OLD_KEY_SETTING)]
    return {key.id: key for key in keys if key is not None}


def encrypting() -> bool:
    """Whether new files are stored encrypted (MODEL_ENCRYPTION_KEY is set)."""
    return configured_key() is not None


# --- envelopes: a file's wrapped data key and nonce prefix, kept in its version row -------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Envelope:
    key_id: str
    nonce_prefix: bytes
    wrapped_key: bytes

    def __str__(self) -> str:
        return ".".join([FORMAT_VERSION, self.key_id, _b64(self.nonce_prefix), _b64(self.wrapped_key)])

    @classmethod
    def parse(cls, text: str) -> Envelope:
        try:
            version, kid, prefix, wrapped = text.split(".")
            envelope = cls(key_id=kid, nonce_prefix=_unb64(prefix), wrapped_key=_unb64(wrapped))
        except (ValueError, binascii.Error) as exc:
            raise Tampered("the file's envelope is malformed") from exc
        if version != FORMAT_VERSION or len(envelope.nonce_prefix) != NONCE_PREFIX_SIZE:
            raise Tampered(f"the file's envelope has an unknown format ({version})")
        return envelope

    def data_key(self, keys: dict[str, MasterKey] | None = None) -> bytes:
        keys = known_keys() if keys is None else keys
        master = keys.get(self.key_id)
        if master is None:
            raise KeyMissing(
                f"the file is encrypted under master key {self.key_id}, which is not configured here "
                f"({KEY_SETTING} is {', '.join(keys) or 'unset'})"
            )
        return master.unwrap(self.wrapped_key)

    def rewrapped(self, *, old: MasterKey, new: MasterKey) -> Envelope:
        return Envelope(
            key_id=new.id, nonce_prefix=self.nonce_prefix, wrapped_key=new.wrap(old.unwrap(self.wrapped_key))
        )


def key_id_prefix(key: MasterKey) -> str:
    """What every envelope wrapped by `key` starts with (to find rows by key in the database)."""
    return f"{FORMAT_VERSION}.{key.id}."


def key_id_prefix_of(envelope: str) -> str:
    """What every envelope wrapped by the same master key as `envelope` starts with."""
    return ".".join(envelope.split(".")[:2]) + "."


def new_envelope(master: MasterKey) -> tuple[Envelope, bytes]:
    """A fresh data key for one file: its envelope under `master`, and the key itself."""
    data_key = AESGCM.generate_key(bit_length=256)
    return Envelope(master.id, os.urandom(NONCE_PREFIX_SIZE), master.wrap(data_key)), data_key


# --- the stream cipher --------------------------------------------------------------------------------------


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    if counter >= MAX_CHUNKS:
        raise ValueError("the file has more chunks than the format can count")
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def encrypted_size(size: int) -> int:
    """The stored size of a `size`-byte plaintext: one tag per chunk, and at least one chunk."""
    chunks = max(1, -(-size // CHUNK_SIZE))
    return size + chunks * TAG_SIZE


class EncryptingWriter:
    """Plaintext in, ciphertext out to `target` (a storage writer: write/commit/abort), a chunk at a time.

    A chunk is sealed only once the next byte is seen, so the last one is known and flagged as such."""

    def __init__(self, target, *, envelope: Envelope, data_key: bytes):
        self.target = target
        self.cipher = AESGCM(data_key)
        self.prefix = envelope.nonce_prefix
        self.counter = 0
        self.buffer = bytearray()

    def _seal(self, chunk: bytes, *, last: bool) -> None:
        self.target.write(
            self.cipher.encrypt(_nonce(self.prefix, self.counter, last), chunk, ASSOCIATED_DATA)
        )
        self.counter += 1

    def write(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) > CHUNK_SIZE:
            self._seal(bytes(self.buffer[:CHUNK_SIZE]), last=False)
            del self.buffer[:CHUNK_SIZE]

    def commit(self) -> None:
        self._seal(bytes(self.buffer), last=True)
        self.buffer.clear()
        self.target.commit()

    def abort(self) -> None:
        self.buffer.clear()
        self.target.abort()


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    # Some streams (S3's, sockets) return fewer bytes than asked before the end.
    parts, missing = [], size
    while missing:
        part = source.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


class DecryptingReader:
    """A readable stream of the plaintext of `source` (ciphertext). Each chunk is authenticated before any of
    it is returned; a chunk that fails, or a stream that ends early or runs on, raises Tampered.

    The first chunk is checked on construction, so a file under the wrong key or cut short to one chunk fails
    before a caller has sent anything."""

    def __init__(self, source: BinaryIO, *, envelope: Envelope, data_key: bytes):
        self.source = source
        self.cipher = AESGCM(data_key)
        self.prefix = envelope.nonce_prefix
        self.counter = 0
        self.ahead: bytes | None = _read_exactly(source, CHUNK_SIZE + TAG_SIZE)
        self.plain = bytearray()
        self._open_next()

    def _open_next(self) -> None:
        if self.ahead is None:
            return
        sealed = self.ahead
        if len(sealed) == CHUNK_SIZE + TAG_SIZE:
            following = _read_exactly(self.source, CHUNK_SIZE + TAG_SIZE)
            last = not following
            self.ahead = following or None
        else:
            last, self.ahead = True, None
        try:
            self.plain += self.cipher.decrypt(
                _nonce(self.prefix, self.counter, last), sealed, ASSOCIATED_DATA
            )
        except InvalidTag as exc:
            raise Tampered(f"chunk {self.counter} of the file does not authenticate") from exc
        self.counter += 1

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            while self.ahead is not None:
                self._open_next()
            size = len(self.plain)
        while len(self.plain) < size and self.ahead is not None:
            self._open_next()
        out = bytes(self.plain[:size])
        del self.plain[:size]
        return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.plain.clear()
        self.source.close()

    def __enter__(self) -> DecryptingReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def encrypt_bytes(data: bytes, master: MasterKey) -> tuple[bytes, Envelope]:
    """Small content (a tokenizer) sealed whole: the ciphertext and its envelope."""
    envelope, data_key = new_envelope(master)
    sealed = _Collect()
    writer = EncryptingWriter(sealed, envelope=envelope, data_key=data_key)
    writer.write(data)
    writer.commit()
    return bytes(sealed.data), envelope


class _Collect:
    def __init__(self):
        self.data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.data += chunk

    def commit(self) -> None:
        pass

    def abort(self) -> None:
        self.data.clear()
