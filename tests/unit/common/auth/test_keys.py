"""Key hygiene: private keys appear 0600 atomically, readable key files and weak secrets are
refused with an error that says what to do, derived keys are bound to the device."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from common.auth import (
    check_private_file,
    check_secret,
    derive_key,
    load_private_key,
    write_atomic,
    write_private_key,
)
from common.errors import InvalidArgument


def test_private_key_is_created_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = write_private_key(tmp_path / "k.key", ec.generate_private_key(ec.SECP256R1()))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert isinstance(load_private_key(path), ec.EllipticCurvePrivateKey)
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]  # no temporary left behind


def test_rewriting_a_key_replaces_it_atomically_and_keeps_0600(tmp_path: Path) -> None:
    path = tmp_path / "k.key"
    first = write_private_key(path, ec.generate_private_key(ec.SECP256R1())).read_bytes()
    inode = path.stat().st_ino
    write_private_key(path, ec.generate_private_key(ec.SECP256R1()))
    assert path.read_bytes() != first
    assert path.stat().st_ino != inode  # a new file renamed over the old one, not rewritten
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_write_never_follows_a_planted_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"untouched")
    path = tmp_path / "k.key"
    path.symlink_to(target)
    write_atomic(path, b"secret", 0o600)
    assert target.read_bytes() == b"untouched"
    assert not path.is_symlink() and path.read_bytes() == b"secret"


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_private_key(tmp_path / "k.key", ec.generate_private_key(ec.SECP256R1()))
    path.chmod(mode)
    with pytest.raises(InvalidArgument, match=rf"mode 0{mode:o}.*chmod 600"):
        load_private_key(path)


def test_a_symlinked_key_file_is_judged_by_its_target(tmp_path: Path) -> None:
    # Kubernetes mounts secrets as symlinks into a ..data directory
    real = write_private_key(tmp_path / "real.key", ec.generate_private_key(ec.SECP256R1()))
    (tmp_path / "link.key").symlink_to(real)
    check_private_file(tmp_path / "link.key")
    real.chmod(0o644)
    with pytest.raises(InvalidArgument, match="mode 0644"):
        check_private_file(tmp_path / "link.key")
    with pytest.raises(InvalidArgument, match="not a regular file"):
        check_private_file(tmp_path)


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        (b"\x00" * 32, "one byte repeated"),
        (b"\xff" * 64, "one byte repeated"),
        (os.urandom(16), "16 bytes; at least 32"),
        (b"", "0 bytes"),
        (b"abcd" * 8, "only 4 distinct byte values"),
    ],
)
def test_weak_secrets_are_refused_with_the_reason(secret: bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        check_secret(secret)


def test_derived_keys_are_bound_to_the_device_and_the_purpose() -> None:
    secret = os.urandom(32)
    a = derive_key(secret, purpose="replay-queue", device_id="dev-a")
    assert len(a) == 32 and a != secret[:32]
    assert a == derive_key(secret, purpose="replay-queue", device_id="dev-a")
    assert a != derive_key(secret, purpose="replay-queue", device_id="dev-b")
    assert a != derive_key(secret, purpose="other", device_id="dev-a")
    with pytest.raises(InvalidArgument, match="device id"):
        derive_key(secret, purpose="replay-queue", device_id="")
    with pytest.raises(InvalidArgument, match="one byte repeated"):
        derive_key(bytes(32), purpose="replay-queue", device_id="dev-a")
