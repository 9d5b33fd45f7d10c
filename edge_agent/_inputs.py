"""Inputs for the CLI: an IDX image file (optionally gzipped), a .npy array, or a folder of
.npy / binary PGM (P5) images; labels from a matching IDX labels file when there is one."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from common.data import parse_idx
from common.errors import InvalidArgument, NotFound


def _read(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def read_pgm(path: Path) -> np.ndarray:
    """A binary 8-bit PGM (P5) image as uint8 HW."""
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P5" or int(fields[3]) > 255:
        raise InvalidArgument(f"{path}: only 8-bit binary PGM (P5) images are supported")
    w, h = int(fields[1]), int(fields[2])
    return np.frombuffer(data, np.uint8, count=w * h, offset=pos + 1).reshape(h, w)


def load_inputs(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (N, H, W) uint8 and labels (or None) from ``path``."""
    if not path.exists():
        raise NotFound(f"input {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".pgm"))
        if not files:
            raise InvalidArgument(f"{path}: no .npy or .pgm images in the folder")
        imgs = [np.load(p) if p.suffix == ".npy" else read_pgm(p) for p in files]
        return np.stack(imgs).astype(np.uint8), None
    if path.suffix == ".npy":
        return np.load(path).astype(np.uint8), None
    try:
        images = parse_idx(_read(path))
    except ValueError as exc:
        raise InvalidArgument(f"{path}: not an IDX image file ({exc})") from None
    labels = None
    label_path = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
    if label_path != path and label_path.exists():
        labels = parse_idx(_read(label_path)).astype(np.int64)
    return images, labels


__all__ = ["load_inputs", "read_pgm"]
