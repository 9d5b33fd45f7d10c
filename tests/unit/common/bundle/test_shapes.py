"""Real inputs for dynamic models: --shape specs, .npy/.npz/image feeds, concrete tensor shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.bundle._shapes import (
    ImagePreprocessing,
    image_input,
    load_feeds,
    load_labelled,
    make_feeds,
    parse_shape,
    tensor_shapes,
)
from common.bundle._split import candidate_cuts, split_model, verify_split
from common.errors import BundleError

from ._foreign import build_foreign


def test_shape_specs_parse_and_bad_ones_say_how_to_write_them() -> None:
    assert parse_shape("x=1x3x736x1312") == ("x", (1, 3, 736, 1312))
    for bad in ("x", "x=1x3xHx4", "=1x2", "x=1x0"):
        with pytest.raises(BundleError, match="expected NAME=DxDx"):
            parse_shape(bad)


def test_explicit_dims_give_every_candidate_its_concrete_shape_and_bytes() -> None:
    model = build_foreign(dynamic=True)
    symbolic = {c.name: c for c in candidate_cuts(model)}
    assert symbolic["pool1"].shape == [None, 8, None, None]
    assert symbolic["pool1"].float32_bytes is None  # what issue 15 saw: '?' everywhere
    feeds = make_feeds(model, {"x": (1, 3, 40, 24)})
    cands = {c.name: c for c in candidate_cuts(model, feeds)}
    assert cands["pool1"].concrete == {"pool1": (1, 8, 20, 12)}
    assert cands["pool1"].float32_bytes == 4 * 8 * 20 * 12 == cands["pool1"].bytes
    assert cands["cat"].concrete["cat"] == (1, 12, 20, 12)
    result = split_model(model, cands["cat"], feeds)
    assert verify_split(model, result, feeds) == 0.0


def test_feeds_that_do_not_fit_the_model_name_the_input() -> None:
    model = build_foreign()  # x[N,3,16,16]
    with pytest.raises(
        BundleError, match=r"input 'x': shape 1x3x8x8 does not fit the model's \?x3x16x16"
    ):
        make_feeds(model, {"x": (1, 3, 8, 8)})
    with pytest.raises(BundleError, match=r"\['y'\] are not model inputs"):
        make_feeds(model, {"y": (1, 3, 16, 16)})


def test_npy_npz_and_image_inputs(tmp_path: Path) -> None:
    model = build_foreign(dynamic=True)
    x = np.zeros((2, 3, 8, 8), np.float32)
    np.save(tmp_path / "x.npy", x)
    assert load_feeds(model, tmp_path / "x.npy")["x"].shape == (2, 3, 8, 8)
    np.savez(tmp_path / "x.npz", x=x)
    assert load_feeds(model, tmp_path / "x.npz")["x"].shape == (2, 3, 8, 8)
    np.savez(tmp_path / "bad.npz", x=x.astype(np.float64))
    with pytest.raises(BundleError, match=r"input 'x': dtype float64 but the model wants float32"):
        load_feeds(model, tmp_path / "bad.npz")
    Image.new("RGB", (1280, 720), (255, 0, 0)).save(tmp_path / "f.png")
    feeds = load_feeds(model, tmp_path / "f.png")
    assert feeds["x"].shape == (1, 3, 736, 1312)  # PP-OCR's detector size for a 1280x720 frame
    # BGR by default, (v/255 - 0.5)/0.5: red is the last channel
    assert feeds["x"][0, :, 0, 0].tolist() == [-1.0, -1.0, 1.0]
    with pytest.raises(BundleError, match="unknown input format"):
        (tmp_path / "x.txt").write_text("1")
        load_feeds(model, tmp_path / "x.txt")
    with pytest.raises(BundleError, match="input file not found"):
        load_feeds(model, tmp_path / "absent.npy")


def test_image_sizes_follow_fixed_and_dynamic_dims(tmp_path: Path) -> None:
    Image.new("RGB", (100, 25)).save(tmp_path / "line.png")
    line = tmp_path / "line.png"
    assert image_input(line, [None, 3, 48, None]).shape == (1, 3, 48, 192)
    prep = ImagePreprocessing(height=48, channel_order="rgb")
    assert image_input(line, [None, 3, None, None], prep).shape == (1, 3, 48, 192)
    assert image_input(line, [1, 3, 32, 64]).shape == (1, 3, 32, 64)
    with pytest.raises(BundleError, match="channel order"):
        ImagePreprocessing(channel_order="bgra")


def test_a_model_that_cannot_run_on_the_input_is_a_bundle_error() -> None:
    model = build_foreign(dynamic=True)
    feeds = {"x": np.zeros((1, 4, 8, 8), np.float32)}  # 4 channels: the stem conv wants 3
    with pytest.raises(BundleError, match=r"cannot run on the given input \(x 1x4x8x8\)"):
        tensor_shapes(model, feeds, ["pool1"])


def test_labelled_calibration_data(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 4, 4), np.uint8), labels=[0, 1, 2])
    images, labels = load_labelled(tmp_path / "d.npz")
    assert images.shape == (3, 4, 4) and labels.dtype == np.int64
    np.savez(tmp_path / "e.npz", images=np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(BundleError, match=r"no array\(s\) \['labels'\]"):
        load_labelled(tmp_path / "e.npz")
