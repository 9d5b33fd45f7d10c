"""Bundles as single archives: deterministic packing and careful unpacking.

A bundle directory travels to and from object storage as one uncompressed tar whose bytes depend
only on the files' names and contents (sorted names, zero times, no owners), so the signature
over it is reproducible. Unpacking takes nothing on trust: regular files and directories only
(no links, devices or absolute or ``..`` paths), at most :data:`MAX_MEMBERS` members and
``max_bytes`` in all, into a fresh directory.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path, PurePosixPath

from common.errors import BundleError

MAX_MEMBERS = 4096
"""Most files and directories one bundle archive may hold."""


def pack_bundle(root: Path) -> bytes:
    """The bundle directory ``root`` as deterministic tar bytes (paths relative to it)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(p for p in root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise BundleError(f"{path}: bundles hold regular files only, not links")
            info = tarfile.TarInfo(rel)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if path.is_dir():
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                data = path.read_bytes()
                info.size = len(data)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def unpack_bundle(archive: bytes, dest: Path, max_bytes: int = 2 << 30) -> Path:
    """Unpack ``archive`` into the new directory ``dest`` (which must not exist); BundleError on
    anything that is not a plain file or directory inside it, or past the limits."""
    if dest.exists():
        raise BundleError(f"{dest} exists already")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:") as tar:
        members = tar.getmembers()
        if len(members) > MAX_MEMBERS:
            raise BundleError(f"bundle archive has {len(members)} members (at most {MAX_MEMBERS})")
        total = 0
        for m in members:
            p = PurePosixPath(m.name)
            if p.is_absolute() or ".." in p.parts or not m.name or m.name.startswith("/"):
                raise BundleError(f"bundle archive member {m.name!r} escapes the bundle")
            if not (m.isreg() or m.isdir()):
                raise BundleError(f"bundle archive member {m.name!r} is not a file or directory")
            total += m.size
            if total > max_bytes:
                raise BundleError(f"bundle archive unpacks to more than {max_bytes} bytes")
        dest.mkdir(parents=True)
        for m in members:
            target = dest.joinpath(*PurePosixPath(m.name).parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(m)
            assert src is not None  # a regular file
            target.write_bytes(src.read())
    return dest


__all__ = ["MAX_MEMBERS", "pack_bundle", "unpack_bundle"]
