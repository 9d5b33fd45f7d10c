"""Rendered frame sets: deterministic, exactly labelled, disjoint splits, a harder hard variant."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from common.cli import main
from common.errors import InvalidArgument, NotFound
from common.frames import (
    FONT_DIR_ENV,
    SCHEMA,
    VARIANTS,
    font_dir,
    frame_seed,
    load_frame_set,
    render_frame,
    write_frame_set,
)


def _inside(points: np.ndarray, quad: np.ndarray, tol: float) -> np.ndarray:
    """Whether each (x, y) point lies inside the convex quadrilateral grown by ``tol`` pixels."""
    inside = np.ones(len(points), bool)
    for i in range(4):
        a, b = quad[i], quad[(i + 1) % 4]
        edge = b - a
        normal = np.array([edge[1], -edge[0]]) / np.hypot(*edge)  # outward for clockwise corners
        inside &= (points - a) @ normal <= tol
    return inside


def test_the_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    a = render_frame(7, "hard", "test", 2)
    b = render_frame(7, "hard", "test", 2)
    assert a.encoded == b.encoded and a.lines == b.lines
    c = render_frame(8, "hard", "test", 2)
    assert c.encoded != a.encoded and [x.text for x in c.lines] != [x.text for x in a.lines]


@pytest.mark.parametrize("variant", ["easy", "hard"])
def test_every_inked_pixel_lies_inside_its_line_box(variant: str) -> None:
    frame = render_frame(3, variant, "calibration", 0, with_ink=True)
    assert frame.image.shape == (720, 1280, 3) and frame.image.dtype == np.uint8
    assert len(frame.lines) >= VARIANTS[variant].lines[0] - 2
    for line, (x0, y0, alpha) in zip(frame.lines, frame.ink, strict=True):
        ys, xs = np.nonzero(alpha > 16)
        assert len(xs) > 20, line.text  # something was drawn
        points = np.stack([xs + x0 + 0.5, ys + y0 + 0.5], axis=1)
        quad = np.asarray(line.box)
        # 1 px for antialiasing and the bicubic resampling of rotated lines
        assert _inside(points, quad, tol=1.5).all(), line
        # and the box is tight: its width is within a few pixels of the ink's extent
        width = np.hypot(*(quad[1] - quad[0]))
        along = points @ ((quad[1] - quad[0]) / width)
        assert abs((along.max() - along.min()) - width) <= 3, line


def test_hard_frames_have_small_rotated_degraded_text_and_easy_frames_do_not() -> None:
    easy = [render_frame(0, "easy", "test", i) for i in range(3)]
    hard = [render_frame(0, "hard", "test", i) for i in range(3)]
    easy_lines = [ln for f in easy for ln in f.lines]
    hard_lines = [ln for f in hard for ln in f.lines]
    assert all(11 <= ln.size <= 22 for ln in hard_lines)
    assert all(ln.size >= 24 and ln.angle == 0 for ln in easy_lines)
    assert max(abs(ln.angle) for ln in hard_lines) > 2 and all(
        abs(ln.angle) <= 6 for ln in hard_lines
    )
    assert {f.format for f in easy} == {"png"} and {f.format for f in hard} == {"jpeg"}
    # noise + blur: neighbouring background pixels differ in hard frames
    assert np.abs(np.diff(hard[0].image[:50, :50].astype(int), axis=1)).mean() > 1
    assert not np.array_equal(easy[0].image, hard[0].image)


def test_splits_use_disjoint_seed_streams() -> None:
    seeds = {
        frame_seed(0, v, s, i)
        for v in ("easy", "hard")
        for s in ("calibration", "validation", "test")
        for i in range(50)
    }
    assert len(seeds) == 300
    digests = {
        hashlib.sha256(render_frame(0, "easy", s, 0).encoded).hexdigest()
        for s in ("calibration", "validation", "test")
    }
    assert len(digests) == 3


def test_bad_names_and_missing_fonts_are_precise_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(InvalidArgument, match="unknown frame variant 'medium'"):
        render_frame(0, "medium")
    with pytest.raises(InvalidArgument, match="unknown split 'train'"):
        render_frame(0, "easy", "train")
    monkeypatch.setenv(FONT_DIR_ENV, str(tmp_path))
    with pytest.raises(NotFound, match="fonts-dejavu-core"):
        font_dir()


def test_written_set_reads_back_with_its_ground_truth(tmp_path: Path) -> None:
    counts = {"calibration": 1, "validation": 1, "test": 2}
    path = write_frame_set(tmp_path, 5, "hard", counts)
    doc, frames = load_frame_set(path.parent)
    assert doc["schema"] == SCHEMA and doc["splits"] == counts and doc["seed"] == 5
    assert [r["split"] for _, r in frames] == ["calibration", "validation", "test", "test"]
    image, rec = frames[-1]
    again = render_frame(5, "hard", "test", 1)
    assert np.array_equal(image, again.image)
    assert [ln["text"] for ln in rec["lines"]] == [ln.text for ln in again.lines]
    assert len(rec["lines"][0]["box"]) == 4
    _, test_only = load_frame_set(path, split="test")
    assert len(test_only) == 2


def test_cli_writes_both_variants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["frames", str(tmp_path), "--seed", "1", "--calibration", "1", "--validation", "0"]
    assert main([*args, "--test", "1"]) == 0
    assert "easy: 2 frames" in capsys.readouterr().out
    for variant, suffix in (("easy", ".png"), ("hard", ".jpg")):
        doc = json.loads((tmp_path / variant / "frames.json").read_text())
        assert [f["file"].endswith(suffix) for f in doc["frames"]] == [True, True]
