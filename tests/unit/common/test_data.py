"""Fashion-MNIST IDX loading and the fixed split."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from common import data
from common.errors import NotFound

SLICE = Path(__file__).resolve().parents[3] / "models" / "data" / "fmnist_test_slice.npz"


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(directory: Path, stem: str, array: np.ndarray, compress: bool = True) -> None:
    if compress:
        with gzip.open(directory / f"{stem}.gz", "wb") as fh:
            fh.write(_idx(array))
    else:
        (directory / stem).write_bytes(_idx(array))


def test_parse_idx_roundtrip_and_errors() -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(data.parse_idx(_idx(arr)), arr)
    with pytest.raises(ValueError, match="unsupported IDX header"):
        data.parse_idx(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="payload has"):
        data.parse_idx(_idx(arr)[:-1])
    with pytest.raises(ValueError, match="too short"):
        data.parse_idx(b"\x00")


def test_missing_files_name_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.ENV_DIR, str(tmp_path))
    assert data.data_dir() == tmp_path
    with pytest.raises(NotFound, match="install the Debian package dataset-fashion-mnist") as info:
        data.load_fashion_mnist("test")
    assert "AIML021_FASHION_MNIST_DIR" in info.value.message


def test_fixed_split_from_a_synthetic_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 6000
    images = (np.arange(n)[:, None, None] % 251 * np.ones((1, 2, 2))).astype(np.uint8)
    labels = np.arange(n) % 10
    _write(tmp_path, "train-images-idx3-ubyte", images)
    _write(tmp_path, "train-labels-idx1-ubyte", labels, compress=False)  # plain files work too
    _write(tmp_path, "t10k-images-idx3-ubyte", images[:10])
    _write(tmp_path, "t10k-labels-idx1-ubyte", labels[:10])
    monkeypatch.setenv(data.ENV_DIR, str(tmp_path))
    xtr, ytr = data.load_fashion_mnist("train")
    xva, _ = data.load_fashion_mnist("validation")
    xte, _ = data.load_fashion_mnist("test")
    assert (len(xtr), len(xva), len(xte)) == (1000, 5000, 10)
    assert ytr.dtype == np.int64
    train_idx, val_idx = data.split_indices(n)
    assert not set(train_idx) & set(val_idx)
    np.testing.assert_array_equal(ytr, labels[train_idx])
    # Same split every time (fixed seed).
    np.testing.assert_array_equal(data.split_indices(n)[1], val_idx)
    with pytest.raises(ValueError, match="unknown split"):
        data.load_fashion_mnist("holdout", tmp_path)  # type: ignore[arg-type]


def test_mismatched_counts_are_rejected(tmp_path: Path) -> None:
    _write(tmp_path, "t10k-images-idx3-ubyte", np.zeros((3, 2, 2)))
    _write(tmp_path, "t10k-labels-idx1-ubyte", np.zeros(2))
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        data.load_fashion_mnist("test", tmp_path)


def test_committed_slice_has_real_images_and_all_classes() -> None:
    images, labels = data.load_slice(SLICE)
    assert images.shape == (2000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and set(np.unique(labels)) == set(range(10))


@pytest.mark.skipif(
    not (data.DEFAULT_DIR / "t10k-labels-idx1-ubyte.gz").exists(),
    reason="needs dataset-fashion-mnist",
)
def test_real_split_sizes() -> None:
    xte, yte = data.load_fashion_mnist("test", data.DEFAULT_DIR)
    assert xte.shape == (10000, 28, 28) and np.bincount(yte).tolist() == [1000] * 10
    xva, _ = data.load_fashion_mnist("validation", data.DEFAULT_DIR)
    assert xva.shape == (5000, 28, 28)
