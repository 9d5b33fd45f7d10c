"""Key hygiene: private keys written 0600 atomically, key files that others can read refused,
device secrets checked for strength, and keys derived from them with HKDF.

A private key is never visible at another mode, not even for an instant: it is written to a
temporary file created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` and mode 0600, flushed, then
renamed over the destination (``os.replace`` is atomic on one file system), so a reader sees the
old key or the new one, never a half-written or world-readable file.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from common.errors import InvalidArgument

MIN_SECRET_BYTES = 32
"""Shortest device secret accepted (256 bits)."""
_MIN_DISTINCT_BYTES = 8
"""A random 32-byte secret has ~30 distinct byte values; fewer than this is a pattern."""


def write_atomic(path: Path, data: bytes, mode: int) -> Path:
    """Write ``data`` to ``path`` with ``mode`` through a fresh temporary file (created
    exclusively with that mode) and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask may only have removed bits; say exactly what we mean
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    """Write ``key`` (PKCS#8 PEM, unencrypted) to ``path`` at mode 0600, atomically."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return write_atomic(path, pem, 0o600)


def check_private_file(path: Path, what: str = "private key") -> None:
    """Refuse a ``what`` file that its group or others may read or write, or that is not a
    regular file. A symlink is judged by its target (Kubernetes mounts secrets as symlinks)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InvalidArgument(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidArgument(f"{what} {path} is not a regular file")
    if st.st_mode & 0o077:
        raise InvalidArgument(
            f"{what} {path} has mode {stat.S_IMODE(st.st_mode):04o}: group or others may read "
            f"it; run `chmod 600 {path}` (and replace the key if others could have read it)"
        )


def read_private_file(path: Path, what: str = "private key") -> bytes:
    """The bytes of a private file after :func:`check_private_file`."""
    check_private_file(path, what)
    return path.read_bytes()


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An EC private key from a PEM file only its owner may read."""
    key = serialization.load_pem_private_key(read_private_file(path), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise InvalidArgument(f"{path}: expected an EC private key (P-256 or P-384)")
    return key


def check_secret(secret: bytes, what: str = "device secret") -> bytes:
    """``secret`` if it is strong enough to derive keys from: at least 32 bytes and not a
    pattern (all one byte, such as all zeros, or only a handful of distinct bytes)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise InvalidArgument(
            f"{what} is {len(secret)} bytes; at least {MIN_SECRET_BYTES} random bytes are "
            "required (e.g. `head -c 32 /dev/urandom`)"
        )
    distinct = len(set(secret))
    if distinct == 1:
        raise InvalidArgument(f"{what} is one byte repeated (0x{secret[0]:02x}); use random bytes")
    if distinct < _MIN_DISTINCT_BYTES:
        raise InvalidArgument(
            f"{what} has only {distinct} distinct byte values in {len(secret)} bytes; use random "
            "bytes"
        )
    return secret


def derive_key(secret: bytes, *, purpose: str, device_id: str, length: int = 32) -> bytes:
    """A ``length``-byte key for ``purpose`` bound to ``device_id``: HKDF-SHA256 of the checked
    ``secret`` (salt names the purpose, info the device), so the same secret gives unrelated
    keys for different devices and purposes."""
    if not device_id:
        raise InvalidArgument(f"{purpose} key derivation needs the device id")
    return HKDF(
        algorithm=hashes.SHA256(),
        length=length,
        salt=f"aiml021.{purpose}.v1".encode(),
        info=b"device:" + device_id.encode(),
    ).derive(check_secret(secret))


__all__ = [
    "MIN_SECRET_BYTES",
    "check_private_file",
    "check_secret",
    "derive_key",
    "load_private_key",
    "read_private_file",
    "write_atomic",
    "write_private_key",
]
