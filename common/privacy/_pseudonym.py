"""Keyed pseudonyms for identifiers that must not be stored or exported in the clear.

A device id becomes ``dev_`` + the first 128 bits of HMAC-SHA256(key, "device|" + id) in hex: the
same device always gets the same pseudonym under one key (so telemetry, logs and the metadata
store still join on it), nobody without the key can recompute it from a guessed id (unlike a plain
hash of a short, guessable id), and rotating the key unlinks everything recorded before.

The key is 32 random bytes held outside what it protects (a file or a secret in the environment).
Each kind of identifier gets its own domain, so a device id and a session id with the same text
never share a pseudonym.

Processes that log from many places (structured logging) can install one pseudonymiser with
:func:`configure` and call :func:`pseudonymise_device`; components built by a composition root
take a :class:`Pseudonymiser` explicitly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import threading
from pathlib import Path

from common.errors import InvalidArgument

KEY_BYTES = 32
DEVICE = "device"
SESSION = "session"
REQUEST = "request"
IDEMPOTENCY = "idempotency"
_PREFIX = {DEVICE: "dev_", SESSION: "ses_", REQUEST: "req_", IDEMPOTENCY: "idk_"}
_DIGEST_HEX = 32  # 128 bits: collisions need ~2^64 devices
_PSEUDONYM = re.compile(r"^(dev|ses|req|idk)_[0-9a-f]{32}$")


def parse_pseudonym_key(text: str | bytes) -> bytes:
    """A 32-byte key from raw bytes, 64 hex characters or base64 text."""
    if isinstance(text, bytes) and len(text) == KEY_BYTES:
        return text
    s = (text.decode("ascii", "replace") if isinstance(text, bytes) else text).strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            key = decode(s)
        except (ValueError, binascii.Error):
            continue
        if len(key) == KEY_BYTES:
            return key
    raise InvalidArgument(
        "pseudonym key must be 32 bytes (raw, 64 hex characters or base64); "
        "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
    )


class Pseudonymiser:
    """Maps identifiers to stable keyed pseudonyms (thread-safe; pure function of key + input)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise InvalidArgument(f"pseudonym key must be {KEY_BYTES} bytes, got {len(key)}")
        self._key = bytes(key)
        # A short fingerprint names the key in audit records without revealing it.
        self.key_id = hmac.new(self._key, b"aiml021.key-id", hashlib.sha256).hexdigest()[:8]

    @classmethod
    def generate(cls) -> Pseudonymiser:
        """A pseudonymiser under a fresh random key (tests, one-off tools)."""
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_text(cls, text: str | bytes) -> Pseudonymiser:
        """From a key given as hex or base64 text (an environment secret)."""
        return cls(parse_pseudonym_key(text))

    @classmethod
    def from_file(cls, path: Path, *, create: bool = False) -> Pseudonymiser:
        """From a key file; ``create`` writes a fresh key (mode 0600) when the file is absent."""
        if create and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(KEY_BYTES) + "\n")
        try:
            return cls(parse_pseudonym_key(path.read_bytes()))
        except OSError as exc:
            raise InvalidArgument(f"pseudonym key file {path}: {exc.strerror}") from None

    def pseudonym(self, identifier: str, domain: str = DEVICE) -> str:
        """The pseudonym of ``identifier`` in ``domain`` (``device``, ``session``, ``request``,
        ``idempotency``)."""
        prefix = _PREFIX.get(domain)
        if prefix is None:
            raise ValueError(f"unknown pseudonym domain {domain!r}; one of {sorted(_PREFIX)}")
        mac = hmac.new(self._key, f"{domain}|{identifier}".encode(), hashlib.sha256)
        return prefix + mac.hexdigest()[:_DIGEST_HEX]

    def device(self, device_id: str) -> str:
        """The pseudonym of a device id (empty stays empty: "no device")."""
        return self.pseudonym(device_id, DEVICE) if device_id else ""

    def session(self, session_id: str) -> str:
        """The pseudonym of a session id (empty stays empty)."""
        return self.pseudonym(session_id, SESSION) if session_id else ""

    def request(self, request_id: str) -> str:
        """The pseudonym of a request id, text the client chose (empty stays empty)."""
        return self.pseudonym(request_id, REQUEST) if request_id else ""

    def idempotency(self, key: str) -> str:
        """The pseudonym of an idempotency key, text the client chose (empty stays empty)."""
        return self.pseudonym(key, IDEMPOTENCY) if key else ""


def is_pseudonym(value: str) -> bool:
    """Whether ``value`` has the shape of a pseudonym this module makes."""
    return bool(_PSEUDONYM.match(value))


_lock = threading.Lock()
_installed: Pseudonymiser | None = None


def configure(pseudonymiser: Pseudonymiser | None) -> None:
    """Install the process-wide pseudonymiser (None removes it) used by
    :func:`pseudonymise_device`; a composition root calls this once at start-up."""
    global _installed
    with _lock:
        _installed = pseudonymiser


def installed() -> Pseudonymiser | None:
    """The process-wide pseudonymiser, if one was installed."""
    return _installed


def pseudonymise_device(device_id: str) -> str:
    """The device's pseudonym under the installed pseudonymiser.

    Without one installed the id is replaced by ``dev_unkeyed`` rather than passed through: a
    raw id never leaks because configuration was forgotten.
    """
    p = _installed
    if not device_id:
        return ""
    return p.device(device_id) if p is not None else "dev_unkeyed"


__all__ = [
    "DEVICE",
    "KEY_BYTES",
    "REQUEST",
    "SESSION",
    "Pseudonymiser",
    "configure",
    "installed",
    "is_pseudonym",
    "parse_pseudonym_key",
    "pseudonymise_device",
]
