"""Bundle archives and their signatures, without storage: what unpacking refuses, and what a
signature binds (archive, name and version)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from common.artifacts import (
    generate_signing_key,
    load_signing_key,
    pack_bundle,
    sign_bundle,
    unpack_bundle,
    verify_bundle,
)
from common.errors import BundleError, InvalidArgument


def _tar(*members: tarfile.TarInfo, data: bytes = b"x") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for m in members:
            if m.isreg():
                m.size = len(data)
                tar.addfile(m, io.BytesIO(data))
            else:
                tar.addfile(m)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    return info


@pytest.mark.parametrize(
    "member",
    [
        _member("../evil.onnx"),
        _member("/etc/passwd"),
        _member("a/../../evil"),
        _member("link", tarfile.SYMTYPE, "/etc/passwd"),
        _member("hard", tarfile.LNKTYPE, "manifest.json"),
        _member("fifo", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "absolute", "nested-dotdot", "symlink", "hardlink", "fifo"],
)
def test_unpack_refuses_members_that_are_not_plain_files_inside(
    tmp_path: Path, member: tarfile.TarInfo
) -> None:
    with pytest.raises(BundleError):
        unpack_bundle(_tar(member), tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.onnx").exists()


def test_unpack_refuses_more_bytes_than_allowed(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="more than 3 bytes"):
        unpack_bundle(_tar(_member("big"), data=b"1234"), tmp_path / "out", max_bytes=3)


def test_pack_then_unpack_gives_the_same_files(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "manifest.json").write_text("{}")
    (src / "sub" / "w.onnx").write_bytes(b"\x00\x01")
    out = unpack_bundle(pack_bundle(src), tmp_path / "out")
    assert (out / "sub" / "w.onnx").read_bytes() == b"\x00\x01"
    assert (out / "manifest.json").read_text() == "{}"


def test_a_signature_binds_archive_name_and_version() -> None:
    key = Ed25519PrivateKey.generate()
    sig = sign_bundle(key, "m", "1", b"archive")
    verify_bundle(key.public_key(), "m", "1", b"archive", sig)
    for name, version, archive in (("m", "2", b"archive"), ("n", "1", b"archive"),
                                   ("m", "1", b"archivE")):  # fmt: skip
        with pytest.raises(BundleError):
            verify_bundle(key.public_key(), name, version, archive, sig)
    with pytest.raises(InvalidArgument):
        sign_bundle(key, "m\n2", "1", b"archive")


def test_the_signing_key_is_owner_only_and_a_readable_one_is_refused(tmp_path: Path) -> None:
    generate_signing_key(tmp_path / "new" / "s.key", tmp_path / "new" / "s.pub")
    assert (tmp_path / "new" / "s.key").stat().st_mode & 0o777 == 0o600
    load_signing_key(tmp_path / "new" / "s.key")
    (tmp_path / "new" / "s.key").chmod(0o640)
    with pytest.raises(InvalidArgument, match="group or others may read"):
        load_signing_key(tmp_path / "new" / "s.key")
