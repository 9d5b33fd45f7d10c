"""Ed25519 signatures of bundle archives.

The registry signs at registration (:func:`sign_bundle`) with a private key only it holds; every
gateway and edge agent verifies (:func:`verify_bundle`) with the public key before a byte of the
bundle is unpacked or loaded. What is signed is not the raw archive but a statement binding it to
its name and version (``aiml021-bundle-v1``, name, version, SHA-256 of the archive), so a valid
archive of one model cannot be replayed as another model, or as another version of the same one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from common.auth import read_private_file, write_atomic
from common.errors import BundleError, InvalidArgument

_DOMAIN = b"aiml021-bundle-v1"


def statement(name: str, version: str, archive: bytes) -> bytes:
    """The bytes signed for ``archive`` registered as ``name`` version ``version``."""
    for field, value in (("name", name), ("version", version)):
        if not value or "\n" in value:
            raise InvalidArgument(f"bundle {field} {value!r} must be one non-empty line")
    digest = hashlib.sha256(archive).hexdigest()
    return b"\n".join((_DOMAIN, name.encode(), version.encode(), digest.encode()))


def generate_signing_key(private_path: Path, public_path: Path) -> None:
    """A new Ed25519 key pair as PEM files; the private one written 0600 atomically (never
    readable by others, not even for a moment)."""
    key = Ed25519PrivateKey.generate()
    for path in (private_path, public_path):
        path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomic(private_path, pem, 0o600)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_atomic(public_path, public, 0o644)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file ``path`` (refused when others may read it)."""
    key = serialization.load_pem_private_key(read_private_file(path, "signing key"), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise InvalidArgument(f"{path}: not an Ed25519 private key")
    return key


def load_verify_key(pem: bytes) -> Ed25519PublicKey:
    """The Ed25519 public key in ``pem``."""
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise InvalidArgument("not an Ed25519 public key")
    return key


def sign_bundle(key: Ed25519PrivateKey, name: str, version: str, archive: bytes) -> bytes:
    """The 64-byte signature of ``archive`` as ``name`` version ``version``."""
    return key.sign(statement(name, version, archive))


def verify_bundle(
    key: Ed25519PublicKey, name: str, version: str, archive: bytes, signature: bytes
) -> None:
    """BundleError unless ``signature`` is the registry's over ``archive`` as name/version."""
    try:
        key.verify(signature, statement(name, version, archive))
    except InvalidSignature:
        raise BundleError(
            f"bundle {name} {version}: signature does not verify (tampered archive, wrong "
            "name or version, or signed by another key)"
        ) from None


__all__ = [
    "generate_signing_key",
    "load_signing_key",
    "load_verify_key",
    "sign_bundle",
    "statement",
    "verify_bundle",
]
