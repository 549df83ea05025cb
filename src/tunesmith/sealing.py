"""Sealed secrets: values the server must show again but never keeps readable in its database.

A secret is sealed with AES-256-GCM under the installation's key-encryption key (KEK), which
lives outside the database: ``TUNESMITH_KEY_ENCRYPTION_KEY`` (base64 of 32 bytes) when set,
otherwise ``<home>/key-encryption.key``, created on first use with mode 0600 and refused when
other users may read it or it does not hold a key. Whoever holds the database alone learns
nothing of a sealed value; whoever holds the KEK file alone learns nothing either.

A sealed value is text, ``v1:<key id>:<base64url(nonce ‖ ciphertext ‖ tag)>``:

- ``v1`` names this format;
- the key id (16 hex digits, from a SHA-256 of the KEK; it reveals nothing of it) names the KEK
  that sealed the value, so a server with another KEK says so instead of failing blindly, and a
  KEK rotation (re-seal every value whose id is the old one's) can be added later;
- the associated data binds the value to its format, its key id and its *slot*, the table, row
  and column it is stored in (:func:`slot`), so a sealed value copied into another row or
  column does not open there.

Opening fails with :class:`Unsealable`; loading an unusable KEK with
:class:`KeyEncryptionKeyError`, which stops the server at start rather than at first use.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tunesmith.private_files import fsync_dir, private_dir
from tunesmith.settings import Settings

FORMAT = "v1"
KEK_BYTES = 32
NONCE_BYTES = 12
KEK_FORMAT = "base64 of 32 bytes, e.g. from `openssl rand -base64 32`"


class KeyEncryptionKeyError(Exception):
    """The key-encryption key cannot be used: the message says where it is and what to do."""


class Unsealable(Exception):
    """A sealed value that does not open. ``other_key``: it was sealed under another KEK (the
    one whose id is ``sealed_with``); otherwise it was altered, moved from another slot, or is
    not a sealed value at all."""

    def __init__(self, message: str, *, other_key: bool, sealed_with: str | None) -> None:
        super().__init__(message)
        self.other_key = other_key
        self.sealed_with = sealed_with


def slot(table: str, row_id: str, column: str) -> str:
    """Where a sealed value is stored; it opens only there."""
    return f"{table}/{row_id}/{column}"


class Sealer:
    """Seals and opens secrets under one key-encryption key; ``source`` says where that key
    came from, for messages."""

    def __init__(self, kek: bytes, *, source: str = "a key given in code") -> None:
        if len(kek) != KEK_BYTES:
            raise ValueError(f"a key-encryption key is {KEK_BYTES} bytes, not {len(kek)}")
        self.key_id = hashlib.sha256(b"tunesmith key-encryption key id\0" + kek).hexdigest()[:16]
        self.source = source
        self._aead = AESGCM(kek)

    def seal(self, secret: str, *, where: str) -> str:
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, secret.encode(), self._associated(self.key_id, where))
        return f"{FORMAT}:{self.key_id}:{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def open(self, sealed: str, *, where: str) -> str:
        version, _, rest = sealed.partition(":")
        key_id, _, body = rest.partition(":")
        if version != FORMAT or not key_id or not body:
            raise Unsealable(
                f"the value in {where} is not a sealed value", other_key=False, sealed_with=None
            )
        if key_id != self.key_id:
            raise Unsealable(
                f"the value in {where} was sealed under the key-encryption key {key_id}, not "
                f"this one ({self.key_id})",
                other_key=True,
                sealed_with=key_id,
            )
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            opened = self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._associated(key_id, where)
            )
        except (InvalidTag, binascii.Error, ValueError):
            raise Unsealable(
                f"the value in {where} does not open under the key-encryption key {key_id}: it "
                "was altered, or copied there from another row or column",
                other_key=False,
                sealed_with=key_id,
            ) from None
        return opened.decode()

    @staticmethod
    def _associated(key_id: str, where: str) -> bytes:
        return f"{FORMAT}:{key_id}:{where}".encode()


def decode_kek(text: str) -> bytes:
    """The 32 bytes a KEK's text (base64, surrounding whitespace allowed) stands for; a
    ``ValueError`` saying what is wrong (never echoing the text) otherwise."""
    try:
        kek = base64.b64decode(text.strip().encode(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"it is not base64 (it must be {KEK_FORMAT})") from None
    if len(kek) != KEK_BYTES:
        raise ValueError(f"it is {len(kek)} bytes, not 32 (it must be {KEK_FORMAT})")
    return kek


def installation_sealer(settings: Settings) -> Sealer:
    """The sealer of this installation: ``TUNESMITH_KEY_ENCRYPTION_KEY`` when set, otherwise
    the key in ``<home>/key-encryption.key``, which is made (0600) when there is none yet."""
    if settings.key_encryption_key is not None:
        try:
            kek = decode_kek(settings.key_encryption_key.get_secret_value())
        except ValueError as exc:
            raise KeyEncryptionKeyError(
                f"TUNESMITH_KEY_ENCRYPTION_KEY cannot be used: {exc}."
            ) from None
        return Sealer(kek, source="TUNESMITH_KEY_ENCRYPTION_KEY")
    path = settings.key_encryption_key_path()
    if not path.exists():
        _create_key_file(path)
    return Sealer(_read_key_file(path), source=str(path))


def _create_key_file(path: Path) -> None:
    """Writes a new KEK to ``path`` atomically: a 0600 temporary file, flushed, then linked
    into place, which fails if another process made ``path`` first (its key is then used)."""
    private_dir(path.parent)
    text = base64.b64encode(secrets.token_bytes(KEK_BYTES)).decode() + "\n"
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)
    fsync_dir(path.parent)


def _read_key_file(path: Path) -> bytes:
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise KeyEncryptionKeyError(
            f"The key-encryption key {path} is not a regular file; it must be a file holding "
            f"the key ({KEK_FORMAT})."
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyEncryptionKeyError(
            f"The key-encryption key {path} has mode {mode:o}: other users may read or change "
            f"it, so tunesmith refuses to use it. Make it private (chmod 600 {path}) and check "
            "who may have copied it; if someone did, regenerate the deployments' keys once it "
            "is replaced."
        )
    try:
        return decode_kek(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        reason = exc if isinstance(exc, ValueError) else f"it is not text ({KEK_FORMAT})"
        raise KeyEncryptionKeyError(
            f"The key-encryption key {path} cannot be used: {reason}. Restore it from the "
            "backup taken with the database. Only if it is lost for good, move it aside: a new "
            "one is made at the next start, and the deployments' keys must then be regenerated "
            "(POST /v1/deployments/{name}/keys/regenerate) to be shown again."
        ) from None
