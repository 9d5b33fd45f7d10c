"""Fashion-MNIST from IDX files, with one fixed train/validation/test split.

The data comes from Debian's ``dataset-fashion-mnist`` package (IDX ``.gz`` files under
/usr/share/datasets/fashion-mnist/); ``AIML021_FASHION_MNIST_DIR`` points elsewhere. Fashion-MNIST
is (c) Zalando Research, MIT licence. The split is fixed: the last 5,000 images of a seeded
permutation of the 60,000 training images are the validation split, the rest is ``train``, and
the 10,000 official test images are ``test``. Only numpy is needed (the training script imports
this module too).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np

from common.errors import NotFound

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
ENV_DIR = "AIML021_FASHION_MNIST_DIR"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
SPLIT_SEED = 20240521
VALIDATION_SIZE = 5000
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

Split = Literal["train", "validation", "test"]
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def data_dir() -> Path:
    """Directory holding the IDX files (env override, else the Debian location)."""
    return Path(os.environ.get(ENV_DIR) or DEFAULT_DIR)


def _open(directory: Path, stem: str) -> bytes:
    for name in (stem + ".gz", stem):
        path = directory / name
        if path.is_file():
            if name.endswith(".gz"):
                with gzip.open(path, "rb") as fh:
                    return fh.read()
            return path.read_bytes()
    raise NotFound(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory}: install the Debian package "
        f"{DEBIAN_PACKAGE} (apt-get install {DEBIAN_PACKAGE}) or set {ENV_DIR} to a directory "
        "holding the IDX files"
    )


def parse_idx(raw: bytes) -> np.ndarray:
    """Decode an IDX (ubyte) file: magic 0x0000_08_<ndim>, big-endian dims, then data."""
    if len(raw) < 4:
        raise ValueError("IDX data too short")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"unsupported IDX header (dtype code {dtype_code:#x})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"IDX payload has {data.size} bytes, header says {dims}")
    return data.reshape(dims)


def _load_official(
    part: Literal["train", "test"], directory: Path
) -> tuple[np.ndarray, np.ndarray]:
    images_stem, labels_stem = _FILES[part]
    images = parse_idx(_open(directory, images_stem))
    labels = parse_idx(_open(directory, labels_stem)).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{part}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels


def split_indices(n_train: int = 60000) -> tuple[np.ndarray, np.ndarray]:
    """Indices into the official training set for (train, validation), fixed by SPLIT_SEED."""
    perm = np.random.default_rng(SPLIT_SEED).permutation(n_train)
    return np.sort(perm[:-VALIDATION_SIZE]), np.sort(perm[-VALIDATION_SIZE:])


def load_fashion_mnist(
    split: Split, directory: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images (uint8, N×28×28) and labels (int64, N) of one split."""
    root = Path(directory) if directory is not None else data_dir()
    if split == "test":
        return _load_official("test", root)
    if split not in ("train", "validation"):
        raise ValueError(f"unknown split {split!r} (train, validation, test)")
    images, labels = _load_official("train", root)
    train_idx, val_idx = split_indices(images.shape[0])
    idx = train_idx if split == "train" else val_idx
    return images[idx], labels[idx]


def load_slice(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The committed test-set slice (``models/data/fmnist_test_slice.npz``): images, labels."""
    with np.load(Path(path)) as npz:
        return npz["images"], npz["labels"].astype(np.int64)


__all__ = [
    "CLASSES",
    "DEBIAN_PACKAGE",
    "ENV_DIR",
    "VALIDATION_SIZE",
    "data_dir",
    "load_fashion_mnist",
    "load_slice",
    "parse_idx",
    "split_indices",
]
