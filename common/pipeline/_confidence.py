"""Line confidence: a score from the CTC step probabilities, calibrated on held-out lines.

The raw score of a line is the mean (rapidocr's ``score``) or the minimum of the best-class
probability at its emitted steps — one doubtful character makes a line wrong, so the minimum
tracks "the whole line is right" more closely — or the minimum over every step of the greedy
path, blanks included (``path_min``): a character dropped in favour of a blank (PP-OCRv4 drops
most spaces) shows only there. Neither is a probability of being right; a
calibration fitted on held-out frames (correct = the line's text equals the ground truth) maps it
to one: Platt scaling (a logistic curve on the score's log-odds, two parameters, fitted by
Newton's method) or isotonic regression (pool-adjacent-violators, monotone, piecewise linear).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from common.bundle import ece
from common.pipeline._ctc import Decoded
from common.pipeline._detect import Boxes
from common.pipeline._registry import Models, step

EPS = 1e-6
Floats = npt.NDArray[np.float64]


def line_score(decoded: Decoded, reduce: str = "min") -> float:
    """``mean`` or ``min`` of the emitted steps' probabilities (0 for an empty line), or
    ``path_min``: the minimum over all steps of the path."""
    if reduce == "path_min":
        path = decoded.path_probs
        return float(path.min()) if path is not None and path.size else 0.0
    if decoded.step_probs.size == 0:
        return 0.0
    if reduce == "mean":
        return float(decoded.step_probs.astype(np.float64).mean())
    if reduce == "min":
        return float(decoded.step_probs.min())
    raise ValueError(f"reduce must be 'mean', 'min' or 'path_min', not {reduce!r}")


def _logit(p: npt.ArrayLike) -> Floats:
    q = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    return np.asarray(np.log(q) - np.log1p(-q))


def _sigmoid(z: Floats) -> Floats:
    return np.asarray(0.5 * (1 + np.tanh(0.5 * z)))


def fit_platt(scores: npt.ArrayLike, correct: npt.ArrayLike, l2: float = 1e-3) -> dict[str, Any]:
    """``p = sigmoid(a * logit(score) + b)`` minimising NLL (+ a tiny ridge, so a separable
    set still has finite parameters); Newton's method on the two parameters."""
    z, y = _logit(scores), np.asarray(correct, np.float64)
    design = np.stack([z, np.ones_like(z)], axis=1)

    def loss(w: Floats) -> float:
        t = design @ w
        # NLL of a logistic model, written to stay finite for large |t|.
        return float(np.sum(np.logaddexp(0, t) - y * t) + 0.5 * l2 * w @ w)

    w = np.array([1.0, 0.0])
    current = loss(w)
    for _ in range(100):
        p = _sigmoid(design @ w)
        grad = design.T @ (p - y) + l2 * w
        hess = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(2)
        delta = np.linalg.solve(hess, grad)
        step_size = 1.0
        while loss(w - step_size * delta) > current and step_size > 1e-8:
            step_size /= 2  # damped Newton: never increase the loss
        w = w - step_size * delta
        previous, current = current, loss(w)
        if previous - current < 1e-12:
            break
    return {"method": "platt", "a": float(w[0]), "b": float(w[1])}


def fit_isotonic(
    scores: npt.ArrayLike, correct: npt.ArrayLike, min_block: int = 1
) -> dict[str, Any]:
    """Monotone non-decreasing fit (pool adjacent violators); knots at block means. With
    ``min_block`` > 1 the smallest block is merged into its smaller neighbour until every block
    holds at least that many lines: fewer, better-estimated steps (still monotone: a merged
    block's mean lies between its parts')."""
    order = np.argsort(np.asarray(scores, np.float64), kind="stable")
    x = np.asarray(scores, np.float64)[order]
    y = np.asarray(correct, np.float64)[order]
    blocks: list[list[float]] = []  # [sum_y, count, sum_x]
    for xi, yi in zip(x, y, strict=True):
        blocks.append([yi, 1.0, xi])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, n, sx = blocks.pop()
            blocks[-1] = [blocks[-1][0] + s, blocks[-1][1] + n, blocks[-1][2] + sx]
    while len(blocks) > 1:
        i = min(range(len(blocks)), key=lambda k: blocks[k][1])
        if blocks[i][1] >= min_block:
            break
        if i == 0 or (i < len(blocks) - 1 and blocks[i + 1][1] < blocks[i - 1][1]):
            j = i + 1
        else:
            j = i - 1
        a, b = min(i, j), max(i, j)
        blocks[a] = [blocks[a][k] + blocks[b][k] for k in range(3)]
        del blocks[b]
    knots_x = [b[2] / b[1] for b in blocks]
    knots_y = [b[0] / b[1] for b in blocks]
    fitted: dict[str, Any] = {"method": "isotonic", "x": knots_x, "y": knots_y}
    if min_block > 1:
        fitted["min_block"] = min_block
    return fitted


BINNED_SHARE = 0.05
"""Least share of the calibration lines in each step of ``binned_isotonic``."""


def fit_binned_isotonic(scores: npt.ArrayLike, correct: npt.ArrayLike) -> dict[str, Any]:
    """Isotonic regression whose steps each hold at least 5% of the lines (about 50 of ~950):
    plain isotonic follows every small run of right or wrong lines among the rarer low scores,
    which held-out lines do not repeat."""
    n = len(np.asarray(scores))
    return fit_isotonic(scores, correct, min_block=max(1, round(BINNED_SHARE * n)))


def apply_calibration(scores: npt.ArrayLike, calibration: dict[str, Any]) -> Floats:
    """Calibrated confidences for raw scores (``identity`` passes them through)."""
    s = np.asarray(scores, np.float64)
    method = calibration.get("method", "identity")
    if method == "identity":
        return s
    if method == "platt":
        return _sigmoid(calibration["a"] * _logit(s) + calibration["b"])
    if method == "isotonic":
        return np.asarray(np.interp(s, calibration["x"], calibration["y"]))
    raise ValueError(f"unknown calibration method {method!r} (identity, platt, isotonic)")


FITS: dict[str, Callable[[npt.ArrayLike, npt.ArrayLike], dict[str, Any]]] = {
    "platt": fit_platt,
    "isotonic": fit_isotonic,
    "binned_isotonic": fit_binned_isotonic,
}


def _held_out(scores: npt.ArrayLike, correct: npt.ArrayLike, method: str, folds: int) -> Floats:
    """Confidences of every line from ``method`` fitted on the other folds (every
    ``folds``-th line held out)."""
    s, y = np.asarray(scores, np.float64), np.asarray(correct, np.float64)
    out = np.zeros_like(s)
    for k in range(folds):
        held = np.arange(len(s)) % folds == k
        if held.all() or not held.any():
            out[held] = s[held]
            continue
        out[held] = apply_calibration(s[held], FITS[method](s[~held], y[~held]))
    return out


def cross_validated_brier(
    scores: npt.ArrayLike, correct: npt.ArrayLike, method: str, folds: int = 5
) -> float:
    """Mean squared error of ``method``'s confidences on held-out folds of the calibration
    lines (every ``folds``-th line)."""
    y = np.asarray(correct, np.float64)
    if not len(y):
        return 0.0
    return float(np.mean((_held_out(scores, correct, method, folds) - y) ** 2))


def cross_validated_ece(
    scores: npt.ArrayLike, correct: npt.ArrayLike, method: str, folds: int = 5
) -> float:
    """ECE (15 bins) of ``method``'s held-out confidences over all calibration lines: how a
    method is chosen without looking at the test set."""
    y = np.asarray(correct, np.float64)
    return ece(_held_out(scores, correct, method, folds), y) if len(y) else 0.0


def choose_method(scores: npt.ArrayLike, correct: npt.ArrayLike) -> str:
    """The calibration method with the lowest cross-validated ECE (ties: Brier score)."""
    return min(
        FITS,
        key=lambda m: (
            round(cross_validated_ece(scores, correct, m), 4),
            cross_validated_brier(scores, correct, m),
        ),
    )


def reliability(
    confidence: npt.ArrayLike, correct: npt.ArrayLike, bins: int = 10
) -> list[dict[str, Any]]:
    """Per equal-width confidence bin (lo, hi]: lines, mean confidence, accuracy."""
    c, y = np.asarray(confidence, np.float64), np.asarray(correct, np.float64)
    idx = np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        table.append(
            {
                "lo": b / bins,
                "hi": (b + 1) / bins,
                "n": n,
                "confidence": float(c[m].mean()) if n else None,
                "accuracy": float(y[m].mean()) if n else None,
            }
        )
    return table


@dataclass(frozen=True)
class Line:
    """One recognised text line."""

    text: str
    confidence: float
    """Calibrated probability that ``text`` is exactly right (raw score if uncalibrated)."""
    score: float
    """rapidocr's line score: mean best-class probability over the emitted steps."""
    box: list[list[float]]
    """Four corners in frame pixels: top-left, top-right, bottom-right, bottom-left."""

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "confidence": self.confidence,
            "score": self.score,
            "box": self.box,
        }


@step("line_scores")
def line_scores(models: Models, decoded: list[Decoded], reduce: str = "min") -> Floats:
    return np.asarray([line_score(d, reduce) for d in decoded], np.float64)


@step("calibrate")
def calibrate(models: Models, scores: Floats, **calibration: Any) -> Floats:
    """Map raw scores through the fitted calibration held in the step's parameters."""
    return apply_calibration(scores, calibration)


@step("lines")
def lines(
    models: Models,
    boxes: Boxes,
    decoded: list[Decoded],
    confidence: Floats,
    min_score: float = 0.5,
    drop_empty: bool = True,
) -> list[Line]:
    """Assemble lines, dropping those whose mean score is below ``min_score`` (rapidocr's
    ``text_score``) and, with ``drop_empty``, those that decoded to blanks only."""
    out = []
    for box, d, conf in zip(boxes, decoded, confidence, strict=True):
        score = line_score(d, "mean")
        if score < min_score or (drop_empty and not d.text.strip()):
            continue
        out.append(Line(d.text, float(conf), score, np.asarray(box, np.float64).tolist()))
    return out


__all__ = [
    "FITS",
    "Line",
    "apply_calibration",
    "calibrate",
    "choose_method",
    "cross_validated_brier",
    "cross_validated_ece",
    "fit_binned_isotonic",
    "fit_isotonic",
    "fit_platt",
    "line_score",
    "line_scores",
    "lines",
    "reliability",
]
