"""Measure an OCR pipeline on rendered frames: against rapidocr's own end-to-end output (the
reproduction check) and against the ground truth (accuracy, calibration of line confidence).

Lines are matched per frame by box overlap, one to one, best overlap first: a pipeline line and
a reference line when their boxes' intersection over union is at least 0.5; a pipeline line and
a ground-truth line when their intersection covers at least half of the smaller box (detections
are unclipped, so larger than the rendered text's tight box). A line is *correct* when it matches
a ground-truth line and its text equals that line's text exactly; unmatched lines are wrong.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from common.bundle import ece
from common.frames import render_frame
from common.pipeline._confidence import (
    FITS,
    Line,
    apply_calibration,
    choose_method,
    cross_validated_brier,
    cross_validated_ece,
    reliability,
)
from common.pipeline._runner import Pipeline

log = logging.getLogger(__name__)

RefLine = tuple[list[list[float]], str]
Reference = Callable[[npt.NDArray[np.uint8]], list[RefLine]]


def _bounds(box: Any) -> tuple[float, float, float, float]:
    b = np.asarray(box, np.float64).reshape(-1, 2)
    return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 0].max()), float(b[:, 1].max())


def overlap(a: Any, b: Any, over: str = "union") -> float:
    """Intersection of the boxes' axis-aligned bounds over their union (``union``) or over the
    smaller of the two (``min``)."""
    ax0, ay0, ax1, ay1 = _bounds(a)
    bx0, by0, bx1, by1 = _bounds(b)
    inter = max(0.0, min(ax1, bx1) - max(ax0, bx0)) * max(0.0, min(ay1, by1) - max(ay0, by0))
    area_a, area_b = (ax1 - ax0) * (ay1 - ay0), (bx1 - bx0) * (by1 - by0)
    denom = area_a + area_b - inter if over == "union" else min(area_a, area_b)
    return inter / denom if denom > 0 else 0.0


def match(
    boxes_a: list[Any], boxes_b: list[Any], least: float, over: str = "union"
) -> dict[int, int]:
    """One-to-one matches a -> b with overlap >= ``least``, best overlap first."""
    pairs = sorted(
        ((overlap(a, b, over), i, j) for i, a in enumerate(boxes_a) for j, b in enumerate(boxes_b)),
        reverse=True,
    )
    out: dict[int, int] = {}
    used: set[int] = set()
    for score, i, j in pairs:
        if score < least:
            break
        if i not in out and j not in used:
            out[i] = j
            used.add(j)
    return out


def reference_for(pipeline: Pipeline, threads: int = 1) -> tuple[str, Reference]:
    """rapidocr's own end-to-end OCR with the pipeline's models: rapidocr_onnxruntime 1.4.4 for
    its own PP-OCRv4 models, rapidocr 3.10 (any det/cls/rec files) otherwise."""
    paths = {m: pipeline.model_path(m) for m in ("det", "cls", "rec")}
    v4 = importlib.util.find_spec("rapidocr_onnxruntime")
    if (
        v4 is not None
        and v4.origin
        and all(p.parent.parent == Path(v4.origin).parent for p in paths.values())
    ):
        from rapidocr_onnxruntime import RapidOCR as RapidOCR4

        engine4 = RapidOCR4(intra_op_num_threads=threads, inter_op_num_threads=1)

        def run4(bgr: npt.NDArray[np.uint8]) -> list[RefLine]:
            result, _ = engine4(bgr)
            return [(box, text) for box, text, _ in result or []]

        return "rapidocr_onnxruntime 1.4.4", run4
    from rapidocr import RapidOCR

    engine = RapidOCR(
        params={
            "Det.model_path": str(paths["det"]),
            "Cls.model_path": str(paths["cls"]),
            "Rec.model_path": str(paths["rec"]),
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
            "Global.log_level": "warning",
        }
    )

    def run(bgr: npt.NDArray[np.uint8]) -> list[RefLine]:
        out: Any = engine(bgr)
        if out.txts is None or out.boxes is None:
            return []
        return [(np.asarray(b).tolist(), t) for b, t in zip(out.boxes, out.txts, strict=True)]

    return "rapidocr 3.10", run


@dataclass
class Scored:
    """A pipeline line's raw score (the pipeline's line score, uncalibrated) and correctness."""

    raw: float
    mean: float
    correct: bool
    variant: str


def frames(seed: int, variants: list[str], split: str, n: int) -> Iterator[tuple[str, Any]]:
    for variant in variants:
        for i in range(n):
            yield variant, render_frame(seed, variant, split, i)


def score_lines(lines: list[Line], truth: list[Any], variant: str) -> list[Scored]:
    """Correctness of each pipeline line against the frame's ground-truth lines."""
    matched = match([ln.box for ln in lines], [t.box for t in truth], 0.5, over="min")
    return [
        Scored(ln.confidence, ln.score, i in matched and ln.text == truth[matched[i]].text, variant)
        for i, ln in enumerate(lines)
    ]


def compare(lines: list[Line], ref: list[RefLine]) -> dict[str, int]:
    """Reference lines reproduced (same text in an overlapping box), missed, and extra lines."""
    matched = match([b for b, _ in ref], [ln.box for ln in lines], 0.5)
    same = sum(1 for j, i in matched.items() if lines[i].text == ref[j][1])
    return {
        "reference": len(ref),
        "same": same,
        "pipeline": len(lines),
        "extra": len(lines) - len(matched),
    }


def calibration_report(cal: list[Scored], test: list[Scored], method: str) -> dict[str, Any]:
    """Fit ``method`` on the calibration lines; ECE (15 bins) and reliability on the test lines."""
    fitted = FITS[method]([s.raw for s in cal], [s.correct for s in cal])
    raw = np.asarray([s.raw for s in test])
    correct = np.asarray([s.correct for s in test])
    conf = apply_calibration(raw, fitted)
    report: dict[str, Any] = {
        "fit": fitted,
        "ece_raw": ece(raw, correct),
        "ece_mean_score": ece(np.asarray([s.mean for s in test]), correct),
        "ece_calibrated": ece(conf, correct),
        "cv_brier_calibration": cross_validated_brier(
            [s.raw for s in cal], [s.correct for s in cal], method
        ),
        "cv_ece_calibration": cross_validated_ece(
            [s.raw for s in cal], [s.correct for s in cal], method
        ),
        "reliability": reliability(conf, correct),
        "per_variant": {},
    }
    for variant in sorted({s.variant for s in test}):
        m = np.asarray([s.variant == variant for s in test])
        report["per_variant"][variant] = {
            "lines": int(m.sum()),
            "accuracy": float(correct[m].mean()),
            "ece_raw": ece(raw[m], correct[m]),
            "ece_calibrated": ece(conf[m], correct[m]),
        }
    return report


def evaluate(
    pipeline: Pipeline,
    seed: int = 0,
    variants: tuple[str, ...] = ("easy", "hard"),
    calibration: int = 40,
    test: int = 12,
    methods: tuple[str, ...] = ("platt", "isotonic", "binned_isotonic"),
    threads: int = 1,
) -> dict[str, Any]:
    """The measurements document of ``aiml021 ocr-eval`` for one pipeline."""
    raw_pipeline = pipeline.with_params("calibrate", {"method": "identity"})
    cal: list[Scored] = []
    for variant, frame in frames(seed, list(variants), "calibration", calibration):
        cal += score_lines(
            raw_pipeline(frame.image[:, :, ::-1].copy())["lines"], list(frame.lines), variant
        )
    ref_name, reference = reference_for(pipeline, threads)
    tested: list[Scored] = []
    comparison: dict[str, dict[str, int]] = {}
    per_frame: list[dict[str, Any]] = []
    for variant, frame in frames(seed, list(variants), "test", test):
        bgr = frame.image[:, :, ::-1].copy()
        lines = raw_pipeline(bgr)["lines"]
        tested += score_lines(lines, list(frame.lines), variant)
        counts = compare(lines, reference(bgr))
        per_frame.append({"frame": frame.id, **counts})
        total = comparison.setdefault(variant, dict.fromkeys(counts, 0))
        for k, v in counts.items():
            total[k] += v
        log.info("%s %s: %s", pipeline.name, frame.id, counts)
    same = sum(c["same"] for c in comparison.values())
    refs = sum(c["reference"] for c in comparison.values())
    return {
        "pipeline": pipeline.name,
        "line_score": raw_pipeline.step_params("line_scores").get("reduce", "min"),
        "reference": ref_name,
        "frames": {
            "seed": seed,
            "variants": list(variants),
            "calibration": calibration,
            "test": test,
        },
        "lines": {"calibration": len(cal), "test": len(tested)},
        "reproduction": {
            "same_text_share": same / refs if refs else 1.0,
            "per_variant": comparison,
            "differing_frames": [f for f in per_frame if f["same"] != f["reference"] or f["extra"]],
        },
        "accuracy": float(np.mean([s.correct for s in tested])) if tested else 0.0,
        "chosen_method": choose_method([s.raw for s in cal], [s.correct for s in cal]),
        "calibration": {m: calibration_report(cal, tested, m) for m in methods},
    }


__all__ = ["compare", "evaluate", "match", "overlap", "reference_for", "score_lines"]
