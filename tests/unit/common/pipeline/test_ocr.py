"""End to end on a rendered frame: the pipeline reads what rapidocr reads; the CLI prints it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.cli import main
from common.frames import render_frame
from common.pipeline import FITS, load_pipeline
from common.pipeline._evaluate import compare, match, overlap, reference_for, score_lines
from common.pipeline._spec import BUILTIN_DIR

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("rapidocr_onnxruntime") is None, reason="extra 'ocr' not installed"
)


def test_overlap_and_one_to_one_matching() -> None:
    a = [[0, 0], [10, 0], [10, 10], [0, 10]]
    b = [[5, 0], [15, 0], [15, 10], [5, 10]]
    assert overlap(a, b) == pytest.approx(50 / 150)
    assert overlap(a, b, over="min") == pytest.approx(0.5)
    assert match([a, b], [b], 0.3) == {1: 0}  # b matches itself, not a (weaker)


def test_the_v4_pipeline_reads_a_rendered_frame_exactly_as_rapidocr_does() -> None:
    frame = render_frame(0, "hard", "test", 1)
    bgr = frame.image[:, :, ::-1].copy()
    pipeline = load_pipeline("ppocr_v4")
    lines = pipeline(bgr)["lines"]
    _, reference = reference_for(pipeline)
    counts = compare(lines, reference(bgr))
    assert counts["reference"] >= 5
    assert counts["same"] == counts["reference"] == counts["pipeline"]
    scored = score_lines(lines, list(frame.lines), "hard")
    assert len(scored) == len(lines) and any(s.correct for s in scored)
    assert all(0.0 <= ln.confidence <= 1.0 for ln in lines)


def test_ocr_cli_prints_lines_of_a_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frame = render_frame(0, "easy", "test", 0)
    path = tmp_path / "frame.png"
    Image.fromarray(frame.image).save(path)
    assert main(["ocr", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # PP-OCRv4 drops most spaces: compare without them
    read = {ln["text"].replace(" ", "") for ln in doc["lines"]}
    truth = [t.text.replace(" ", "") for t in frame.lines]
    assert sum(t in read for t in truth) >= len(truth) / 2
    assert all(len(ln["box"]) == 4 for ln in doc["lines"])


def test_a_frame_without_text_yields_no_lines() -> None:
    blank = np.full((720, 1280, 3), 200, np.uint8)
    assert load_pipeline("ppocr_v6")(blank)["lines"] == []


def test_ocr_eval_measures_and_writes_the_calibration_into_the_description(tmp_path: Path) -> None:
    description = tmp_path / "pipeline.json"
    description.write_text((BUILTIN_DIR / "ppocr_v4.json").read_text())
    out = tmp_path / "eval.json"
    argv = ["ocr-eval", "--pipeline", str(description), "--variant", "easy"]
    argv += [
        "--calibration",
        "2",
        "--test",
        "1",
        "--method",
        "platt",
        "--write",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    doc = json.loads(out.read_text())
    assert doc["command"].startswith("aiml021 ocr-eval --pipeline")
    (result,) = doc["pipelines"]
    assert result["reproduction"]["same_text_share"] == 1.0
    assert result["method"] == "platt" and result["chosen_method"] in FITS
    report = result["calibration"]["platt"]
    assert set(result["calibration"]) == set(FITS)
    assert 0 <= report["cv_ece_calibration"] <= 1
    assert sum(row["n"] for row in report["reliability"]) == result["lines"]["test"]
    written = json.loads(description.read_text())
    (calibrate,) = [s for s in written["steps"] if s["op"] == "calibrate"]
    assert calibrate["params"] == report["fit"]
    assert written["calibration"]["lines"] == result["lines"]["calibration"]
