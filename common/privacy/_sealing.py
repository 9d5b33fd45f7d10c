"""Encryption at rest: AES-256-GCM under a rotatable key ring.

A sealed value is ``MAGIC`` (4 bytes) + key-id length (1 byte) + key id (ASCII) + 12-byte random
nonce + ciphertext with its 16-byte tag. The header is authenticated too, and so is the caller's
``context`` (for example the store key the value lives under), so a value copied to another key,
or edited, fails to open instead of answering for the wrong thing.

The ring seals under its *primary* key and opens with any key it still holds: rotating adds a new
primary and keeps the old keys until everything sealed under them has expired or been re-sealed
(:meth:`KeyRing.reseal`). The ring file is JSON, ``{"primary": ID, "keys": {ID: hex, ...}}``,
kept away from the data it protects (a secret store, a mounted file with mode 0600).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import DataLoss, InvalidArgument

MAGIC = b"\xa7AR1"
_NONCE = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def is_sealed(blob: bytes) -> bool:
    """Whether ``blob`` starts like a sealed value."""
    return bytes(blob[: len(MAGIC)]) == MAGIC


class KeyRing:
    """Named 32-byte AES keys, one of them the primary (the one new values are sealed under)."""

    def __init__(self, keys: dict[str, bytes], primary: str) -> None:
        if primary not in keys:
            raise InvalidArgument(f"key ring: primary key {primary!r} is not in the ring")
        for kid, key in keys.items():
            if not _KEY_ID.match(kid):
                raise InvalidArgument(f"key ring: key id {kid!r} must be 1-64 of [A-Za-z0-9_.-]")
            if len(key) != 32:
                raise InvalidArgument(f"key ring: key {kid!r} must be 32 bytes for AES-256-GCM")
        self._keys = {kid: AESGCM(key) for kid, key in keys.items()}
        self._raw = dict(keys)
        self.primary = primary

    @classmethod
    def generate(cls, key_id: str | None = None) -> KeyRing:
        """A ring with one fresh random key."""
        kid = key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
        return cls({kid: secrets.token_bytes(32)}, kid)

    @property
    def key_ids(self) -> list[str]:
        """Ids of the keys held (the primary first)."""
        return [self.primary, *sorted(k for k in self._keys if k != self.primary)]

    def rotated(self, key_id: str | None = None) -> KeyRing:
        """A ring with a new random primary key; the old keys still open what they sealed."""
        kid = key_id or time.strftime("k%Y%m%d%H%M%S", time.gmtime())
        if kid in self._raw:
            raise InvalidArgument(f"key ring already holds a key {kid!r}")
        return KeyRing({**self._raw, kid: secrets.token_bytes(32)}, kid)

    def without(self, key_id: str) -> KeyRing:
        """The ring without a retired key (never the primary)."""
        if key_id == self.primary:
            raise InvalidArgument("cannot retire the primary key; rotate first")
        return KeyRing({k: v for k, v in self._raw.items() if k != key_id}, self.primary)

    # -- files -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> KeyRing:
        """Read a ring file; errors name the file."""
        try:
            data = json.loads(path.read_text())
            keys = {str(k): bytes.fromhex(v) for k, v in data["keys"].items()}
            return cls(keys, str(data["primary"]))
        except OSError as exc:
            raise InvalidArgument(f"key ring {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidArgument(f"key ring {path}: not a key ring file ({exc})") from None

    def save(self, path: Path) -> None:
        """Write the ring (mode 0600, atomically)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        body = {"primary": self.primary, "keys": {k: v.hex() for k, v in self._raw.items()}}
        with os.fdopen(fd, "w") as fh:
            json.dump(body, fh, indent=1)
        os.replace(tmp, path)

    # -- sealing -----------------------------------------------------------------------------
    def seal(self, plaintext: bytes, context: bytes = b"") -> bytes:
        """``plaintext`` encrypted under the primary key, bound to ``context``."""
        kid = self.primary.encode()
        header = MAGIC + bytes([len(kid)]) + kid
        nonce = secrets.token_bytes(_NONCE)
        return header + nonce + self._keys[self.primary].encrypt(nonce, plaintext, header + context)

    def key_id_of(self, blob: bytes) -> str:
        """The id of the key ``blob`` was sealed under (DataLoss when it is not sealed)."""
        return self._header(blob)[0]

    def _header(self, blob: bytes) -> tuple[str, int]:
        if not is_sealed(blob) or len(blob) < len(MAGIC) + 1:
            raise DataLoss("stored value is not sealed (no AES-GCM header)")
        n = blob[len(MAGIC)]
        end = len(MAGIC) + 1 + n
        if len(blob) < end + _NONCE + 16:
            raise DataLoss("sealed value is truncated")
        return bytes(blob[len(MAGIC) + 1 : end]).decode("ascii", "replace"), end

    def open(self, blob: bytes, context: bytes = b"") -> bytes:
        """The plaintext of a sealed value; DataLoss when it was sealed under a key the ring no
        longer holds, under another context, or was altered."""
        blob = bytes(blob)
        kid, end = self._header(blob)
        aead = self._keys.get(kid)
        if aead is None:
            raise DataLoss(f"sealed under key {kid!r}, which the key ring no longer holds")
        try:
            return aead.decrypt(
                blob[end : end + _NONCE], blob[end + _NONCE :], blob[:end] + context
            )
        except InvalidTag:
            raise DataLoss("sealed value failed authentication (altered or moved)") from None

    def reseal(self, blob: bytes, context: bytes = b"") -> bytes:
        """``blob`` sealed again under the primary key (unchanged when it already is)."""
        if self.key_id_of(blob) == self.primary:
            return bytes(blob)
        return self.seal(self.open(blob, context), context)


__all__ = ["MAGIC", "KeyRing", "is_sealed"]
