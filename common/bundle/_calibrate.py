"""Calibration of early exits: temperature scaling, ECE, NLL, risk-coverage, thresholds.

Temperature scaling (Guo et al., 2017) divides logits by one scalar per exit, fitted on the
validation split by minimising NLL. Thresholds are chosen on the same split so that the cascade
(leave at the first exit whose confidence clears its threshold) stays within an accuracy budget
of the final exit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from common.confidence import softmax

ECE_BINS = 15


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, np.float64) / temperature
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    return float(np.mean(lse - z[np.arange(z.shape[0]), labels]))


def ece(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error with ``bins`` equal-width confidence bins (0..1)."""
    conf = np.asarray(confidence, np.float64)
    hit = np.asarray(correct, np.float64)
    if conf.size == 0:
        return 0.0
    # Bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 falls in bin 0.
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = idx == b
        n = int(mask.sum())
        if n:
            total += n * abs(float(hit[mask].mean()) - float(conf[mask].mean()))
    return total / conf.size


def confidence_and_correct(
    logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Max softmax probability and whether the argmax is right, per sample."""
    p = softmax(logits, temperature)
    return p.max(axis=1), p.argmax(axis=1) == labels


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, lo: float = 0.05, hi: float = 20.0
) -> float:
    """Temperature minimising NLL, by golden-section search on log T in [lo, hi].

    NLL is convex in 1/T, hence unimodal in log T, so the search finds the global minimum.
    """
    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return math.exp((a + b) / 2)


@dataclass(frozen=True)
class RiskCoverage:
    """Selective classification curve: keep the most confident fraction ``coverage``."""

    coverage: np.ndarray
    """Fraction of samples answered, increasing (1/N .. 1)."""
    risk: np.ndarray
    """Error rate among the answered samples at each coverage."""
    threshold: np.ndarray
    """Confidence of the last answered sample at each coverage."""
    aurc: float
    """Area under the risk-coverage curve (mean risk over coverages)."""


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """Risk-coverage curve of answering only when confidence is high."""
    order = np.argsort(-np.asarray(confidence, np.float64), kind="stable")
    conf = np.asarray(confidence, np.float64)[order]
    hit = np.asarray(correct, np.float64)[order]
    n = np.arange(1, conf.size + 1)
    risk = 1.0 - np.cumsum(hit) / n
    return RiskCoverage(n / conf.size, risk, conf, float(risk.mean()) if conf.size else 0.0)


@dataclass(frozen=True)
class CascadeResult:
    """Where each sample leaves a cascade and how accurate the cascade is."""

    exit_index: np.ndarray
    """Index of the exit each sample leaves at."""
    accuracy: float
    """Accuracy of the cascade's answers."""
    share: list[float]
    """Fraction of samples leaving at each exit."""


def cascade(
    exit_logits: Sequence[np.ndarray],
    labels: np.ndarray,
    temperatures: Sequence[float],
    thresholds: Sequence[float | None],
) -> CascadeResult:
    """Simulate the early-exit rule: leave at the first exit with confidence >= threshold."""
    n = labels.shape[0]
    k = len(exit_logits)
    where = np.full(n, k - 1, np.int64)
    pending = np.ones(n, bool)
    pred = np.zeros(n, np.int64)
    for i, (lg, t, thr) in enumerate(zip(exit_logits, temperatures, thresholds, strict=True)):
        p = softmax(lg, t)
        take = (
            pending.copy() if i == k - 1 else pending & (thr is not None) & (p.max(1) >= (thr or 0))
        )
        where[take] = i
        pred[take] = p.argmax(1)[take]
        pending &= ~take
    share = [float(np.mean(where == i)) for i in range(k)]
    return CascadeResult(where, float(np.mean(pred == labels)) if n else 0.0, share)


def select_thresholds(
    exit_logits: Sequence[np.ndarray],
    labels: np.ndarray,
    temperatures: Sequence[float],
    budget: float = 0.01,
) -> list[float | None]:
    """Lowest threshold per exit, earliest first, keeping cascade accuracy >= final - budget.

    ``budget`` is absolute (0.01 = one accuracy point). Exits are visited in order; each takes
    as many samples as it can while the cascade (later non-final exits still disabled) stays
    within budget. The final exit's threshold is 0.0; an exit that can take nothing gets None.
    """
    k = len(exit_logits)
    final_acc = float(np.mean(softmax(exit_logits[-1]).argmax(1) == labels))
    target = final_acc - budget
    final_hit = softmax(exit_logits[-1]).argmax(1) == labels
    thresholds: list[float | None] = [None] * (k - 1) + [0.0]
    for i in range(k - 1):
        res = cascade(exit_logits, labels, temperatures, thresholds)
        pending = res.exit_index == k - 1
        fixed_hits = float(
            np.sum(_cascade_hits(exit_logits, labels, temperatures, thresholds, res)[~pending])
        )
        conf, hit = confidence_and_correct(exit_logits[i], labels, temperatures[i])
        idx = np.flatnonzero(pending)
        order = idx[np.argsort(-conf[idx], kind="stable")]
        c_sorted = conf[order]
        # Taking the first m pending samples: hits = fixed + exit-i hits on them + final on rest.
        gain = np.concatenate([[0.0], np.cumsum(hit[order].astype(np.float64) - final_hit[order])])
        acc = (fixed_hits + float(final_hit[order].sum()) + gain) / labels.shape[0]
        # Only cut between distinct confidences (ties must all leave together).
        valid = np.ones(order.size + 1, bool)
        valid[1:-1] = c_sorted[1:] < c_sorted[:-1]
        ok = np.flatnonzero(valid & (acc >= target - 1e-12))
        m = int(ok.max()) if ok.size else 0
        thresholds[i] = float(c_sorted[m - 1]) if m > 0 else None
    return thresholds


def _cascade_hits(
    exit_logits: Sequence[np.ndarray],
    labels: np.ndarray,
    temperatures: Sequence[float],
    thresholds: Sequence[float | None],
    res: CascadeResult,
) -> np.ndarray:
    hits = np.zeros(labels.shape[0], bool)
    for i, lg in enumerate(exit_logits):
        mask = res.exit_index == i
        hits[mask] = softmax(lg[mask], temperatures[i]).argmax(1) == labels[mask]
    return hits
