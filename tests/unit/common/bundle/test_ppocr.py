"""Bring your own model: PP-OCR v4/v6 detectors and recognizers from the `ocr` wheels, cut on
real rendered frames (small ones, to stay fast) with concrete shapes and exact verification."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from common.bundle._multicut import frontier_cuts
from common.bundle._shapes import ImagePreprocessing, load_feeds
from common.bundle._split import candidate_cuts, load_model, split_model, verify_split
from common.cli import main
from common.frames import render_frame

V4 = ("rapidocr_onnxruntime", "ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx")
V6 = ("rapidocr", "PP-OCRv6_det_small.onnx", "PP-OCRv6_rec_small.onnx")
V4_BACKBONE = "p2o.Add.43,p2o.Add.71,p2o.Add.147,p2o.Add.215"  # C2..C5: the FPN's lateral inputs
V4_NECK = "p2o.Add.259,p2o.Add.265,p2o.Add.271,p2o.Add.277"  # the four FPN outputs
V6_NECK = "p2o.pd_op.add.82.0,p2o.pd_op.add.86.0,p2o.pd_op.add.90.0,p2o.pd_op.add.94.0"


def _model(package: str, file: str) -> onnx.ModelProto:
    spec = importlib.util.find_spec(package)
    # requirements/lock.txt installs both wheels: a missing one is a broken setup, not a skip
    assert spec is not None and spec.origin is not None, f"{package} missing: run make setup"
    return load_model(Path(spec.origin).parent / "models" / file)


@pytest.fixture(scope="module")
def frame_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered frame scaled to 320x180 (the detector input becomes 1x3x192x320)."""
    path = tmp_path_factory.mktemp("frames") / "frame.png"
    frame = render_frame(0, "easy", "test", 0)
    Image.fromarray(frame.image).resize((320, 180), Image.Resampling.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def line_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One text line cropped by its ground-truth box (the recognizer's input)."""
    path = tmp_path_factory.mktemp("lines") / "line.png"
    frame = render_frame(0, "hard", "test", 0)
    box = np.asarray(frame.lines[0].box)
    (x0, y0), (x1, y1) = np.floor(box.min(0)).astype(int), np.ceil(box.max(0)).astype(int)
    Image.fromarray(frame.image[y0:y1, x0:x1]).save(path)
    return path


def _small(path: Path, model: onnx.ModelProto, height: int | None = None) -> dict:
    return load_feeds(model, path, ImagePreprocessing(short_side=32, height=height))


def test_v4_detector_cuts_carry_real_shapes_and_split_exactly(frame_png: Path) -> None:
    model = _model(V4[0], V4[1])
    feeds = _small(frame_png, model)
    assert feeds["x"].shape == (1, 3, 192, 320)
    cands = {c.name: c for c in candidate_cuts(model, feeds)}
    assert len(cands) == 50 and all(c.float32_bytes for c in cands.values())
    assert cands["p2o.Add.43"].concrete == {"p2o.Add.43": (1, 48, 48, 80)}
    multi = {c.name: c for c in frontier_cuts(model, feeds)}
    assert V4_BACKBONE in multi and V4_NECK in multi
    assert multi[V4_NECK].float32_bytes == 4 * 24 * (6 * 10 + 12 * 20 + 24 * 40 + 48 * 80)
    for cut in ("p2o.Add.43", V4_BACKBONE, V4_NECK):
        result = split_model(model, cands.get(cut) or multi[cut], feeds)
        assert verify_split(model, result, feeds, tolerance=1e-4) == 0.0


def test_v4_recognizer_cuts_that_used_to_crash_now_split(line_png: Path) -> None:
    model = _model(V4[0], V4[2])  # input x[N,3,?,W]: the height must be given
    feeds = _small(line_png, model, height=48)
    assert feeds["x"].shape[:3] == (1, 3, 48)
    for cut in ("conv2d_208.tmp_0", "squeeze_0.tmp_0"):  # ValidationError before (issue 15)
        result = split_model(model, cut, feeds)
        assert len(result.cut.concrete[cut]) in (3, 4)
        assert verify_split(model, result, feeds) == 0.0


@pytest.mark.parametrize("file", [V6[1], V6[2]])
def test_v6_models_split_at_three_cuts_exactly(file: str, frame_png: Path, line_png: Path) -> None:
    model = _model(V6[0], file)
    det = "det" in file
    feeds = _small(frame_png, model) if det else _small(line_png, model)
    cands = candidate_cuts(model, feeds)
    assert all(c.concrete and c.float32_bytes for c in cands)
    picks = [cands[len(cands) // 4], cands[len(cands) // 2]]
    if det:
        picks.append(next(c for c in frontier_cuts(model, feeds) if c.name == V6_NECK))
    else:
        picks.append(cands[-2])
    for cand in picks:
        assert verify_split(model, split_model(model, cand, feeds), feeds, tolerance=1e-4) == 0.0


def test_cli_split_on_an_image_shows_concrete_shapes(
    line_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _model(V4[0], V4[2])
    spec = importlib.util.find_spec(V4[0])
    assert spec is not None and spec.origin is not None
    rec = str(Path(spec.origin).parent / "models" / V4[2])
    assert main(["split", rec, "--input", str(line_png), "--image-height", "48"]) == 0
    out = capsys.readouterr().out
    assert "shapes on x 1x3x48x" in out and "NxN" not in out and " ? " not in out
    args = ["split", rec, "--input", str(line_png), "--cut", "squeeze_0.tmp_0", "-o", str(tmp_path)]
    assert main([*args, "--image-height", "48"]) == 0
    out = capsys.readouterr().out
    assert "verified on the given input: max abs diff tail(head(x)) vs full = 0" in out
