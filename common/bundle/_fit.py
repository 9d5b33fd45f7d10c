"""Calibrate a bundle's exits on labelled data and evaluate its cascade."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from common.bundle._bundle import Bundle
from common.bundle._calibrate import (
    cascade,
    confidence_and_correct,
    ece,
    fit_temperature,
    nll,
    risk_coverage,
    select_thresholds,
)
from common.bundle._runner import run_exits

log = logging.getLogger(__name__)


def calibrate_bundle(
    bundle: Bundle,
    images: np.ndarray,
    labels: np.ndarray,
    budget: float = 0.01,
    split: str = "validation",
    write: bool = True,
) -> dict[str, Any]:
    """Fit temperatures, pick thresholds for ``budget`` and (by default) write the manifest.

    ``images`` are raw uint8 images (preprocessed with the bundle's spec). Returns the record
    stored under the manifest's ``calibration`` field.
    """
    logits = run_exits(bundle, bundle.preprocess(images))
    temps = [fit_temperature(lg, labels) for lg in logits]
    thresholds = select_thresholds(logits, labels, temps, budget)
    record: dict[str, Any] = {"split": split, "n": int(labels.shape[0]), "budget": budget}
    record["exits"] = exit_metrics(bundle, logits, labels, temps, thresholds)
    res = cascade(logits, labels, temps, thresholds)
    record["cascade"] = {
        "accuracy": res.accuracy,
        "final_accuracy": record["exits"][bundle.exits[-1].name]["accuracy"],
        "exit_share": {e.name: s for e, s in zip(bundle.exits, res.share, strict=True)},
    }
    if write:
        bundle.update_exits(temps, thresholds, record)
    log.info("calibrated %s: temperatures %s thresholds %s", bundle.name, temps, thresholds)
    return record


def exit_metrics(
    bundle: Bundle,
    logits: list[np.ndarray],
    labels: np.ndarray,
    temps: list[float],
    thresholds: list[float | None],
) -> dict[str, dict[str, Any]]:
    """Accuracy, ECE/NLL before and after temperature scaling, AURC, per exit."""
    out: dict[str, dict[str, Any]] = {}
    for ex, lg, t, thr in zip(bundle.exits, logits, temps, thresholds, strict=True):
        conf0, hit = confidence_and_correct(lg, labels)
        conf1, _ = confidence_and_correct(lg, labels, t)
        out[ex.name] = {
            "accuracy": float(hit.mean()),
            "temperature": t,
            "threshold": thr,
            "ece_before": ece(conf0, hit),
            "ece_after": ece(conf1, hit),
            "nll_before": nll(lg, labels),
            "nll_after": nll(lg, labels, t),
            "aurc": risk_coverage(conf1, hit).aurc,
        }
    return out


def evaluate_bundle(bundle: Bundle, images: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Per-exit metrics and cascade behaviour with the manifest's temperatures/thresholds."""
    logits = run_exits(bundle, bundle.preprocess(images))
    temps = [e.temperature for e in bundle.exits]
    thresholds = [e.threshold for e in bundle.exits]
    res = cascade(logits, labels, temps, thresholds)
    return {
        "n": int(labels.shape[0]),
        "exits": exit_metrics(bundle, logits, labels, temps, thresholds),
        "cascade": {
            "accuracy": res.accuracy,
            "exit_share": {e.name: s for e, s in zip(bundle.exits, res.share, strict=True)},
        },
    }


def risk_coverage_table(
    bundle: Bundle,
    logits: list[np.ndarray],
    labels: np.ndarray,
    coverages: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
) -> dict[str, list[dict[str, float]]]:
    """Per exit: risk (error rate) and confidence threshold at chosen coverages (calibrated)."""
    out: dict[str, list[dict[str, float]]] = {}
    for ex, lg in zip(bundle.exits, logits, strict=True):
        conf, hit = confidence_and_correct(lg, labels, ex.temperature)
        rc = risk_coverage(conf, hit)
        rows = []
        for c in coverages:
            i = max(0, min(len(rc.coverage) - 1, int(np.ceil(c * len(rc.coverage))) - 1))
            rows.append(
                {
                    "coverage": float(rc.coverage[i]),
                    "risk": float(rc.risk[i]),
                    "threshold": float(rc.threshold[i]),
                }
            )
        out[ex.name] = rows
    return out
