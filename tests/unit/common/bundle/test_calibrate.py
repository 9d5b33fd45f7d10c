"""Calibration math on synthetic logits with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from common.bundle._calibrate import (
    cascade,
    confidence_and_correct,
    ece,
    fit_temperature,
    nll,
    risk_coverage,
    select_thresholds,
)
from common.confidence import softmax


def _calibrated(n: int, k: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose softmax is the true label distribution (perfectly calibrated at T=1)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2.5, (n, k))
    p = softmax(logits)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_t: float) -> None:
    logits, labels = _calibrated(20000)
    t = fit_temperature(logits * true_t, labels)  # over-confident by true_t
    assert t == pytest.approx(true_t, rel=0.05)
    assert nll(logits * true_t, labels, t) <= nll(logits * true_t, labels) + 1e-12


def test_temperature_scaling_reduces_ece_of_overconfident_logits() -> None:
    logits, labels = _calibrated(20000, seed=1)
    hot = logits * 3.0
    conf0, hit = confidence_and_correct(hot, labels)
    conf1, _ = confidence_and_correct(hot, labels, fit_temperature(hot, labels))
    assert ece(conf0, hit) > 0.1
    assert ece(conf1, hit) < 0.02


def test_ece_by_hand() -> None:
    conf = np.array([0.95, 0.95, 0.55, 0.55, 0.05])
    hit = np.array([1, 0, 1, 1, 0])
    # bins: (0.933,1] -> acc .5 conf .95 (n=2); (0.533,.6] -> acc 1 conf .55 (n=2); [0,.067] -> 0 vs .05
    expected = (2 * 0.45 + 2 * 0.45 + 1 * 0.05) / 5
    assert ece(conf, hit) == pytest.approx(expected)
    assert ece(np.array([]), np.array([])) == 0.0
    assert ece(np.array([0.0]), np.array([0])) == 0.0


def test_nll_and_softmax_by_hand() -> None:
    logits = np.array([[0.0, np.log(3.0)]])
    assert softmax(logits)[0, 1] == pytest.approx(0.75)
    assert nll(logits, np.array([1])) == pytest.approx(-np.log(0.75))
    assert nll(logits, np.array([1]), temperature=np.log(3.0)) == pytest.approx(
        -np.log(np.e / (1 + np.e))
    )


def test_risk_coverage_orders_by_confidence() -> None:
    rc = risk_coverage(np.array([0.9, 0.2, 0.8, 0.6]), np.array([1, 0, 1, 0]))
    np.testing.assert_allclose(rc.coverage, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(rc.risk, [0, 0, 1 / 3, 0.5])
    np.testing.assert_allclose(rc.threshold, [0.9, 0.8, 0.6, 0.2])
    assert rc.aurc == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)


def test_cascade_routes_by_threshold() -> None:
    labels = np.array([0, 1, 1])
    early = np.array(
        [[5.0, 0.0], [0.0, 0.1], [3.0, 0.0]]
    )  # confident right, unsure, confident wrong
    final = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    res = cascade([early, final], labels, [1.0, 1.0], [0.9, 0.0])
    assert list(res.exit_index) == [0, 1, 0]
    assert res.accuracy == pytest.approx(2 / 3)
    assert res.share == pytest.approx([2 / 3, 1 / 3])
    off = cascade([early, final], labels, [1.0, 1.0], [None, 0.0])
    assert list(off.exit_index) == [1, 1, 1] and off.accuracy == 1.0


def test_select_thresholds_respects_the_budget_and_exits_early() -> None:
    rng = np.random.default_rng(3)
    n, k = 5000, 10
    labels = rng.integers(0, k, n)

    # Early exit: right 85% of the time with confidence tracking correctness; final 95% right.
    def head(acc: float, scale: float) -> np.ndarray:
        logits = rng.normal(0, 1, (n, k))
        right = rng.random(n) < acc
        target = np.where(right, labels, (labels + 1) % k)
        logits[np.arange(n), target] += scale * rng.random(n) + 1
        return logits

    exits = [head(0.85, 6.0), head(0.90, 6.0), head(0.95, 6.0)]
    temps = [1.0, 1.0, 1.0]
    final_acc = float(np.mean(exits[-1].argmax(1) == labels))
    for budget in (0.0, 0.01, 0.05):
        thr = select_thresholds(exits, labels, temps, budget)
        assert thr[-1] == 0.0
        res = cascade(exits, labels, temps, thr)
        assert res.accuracy >= final_acc - budget - 1e-9
        if budget >= 0.01:
            assert thr[0] is not None and res.share[0] > 0.3
    # A looser budget never exits less at the first exit.
    shares = [
        cascade(exits, labels, temps, select_thresholds(exits, labels, temps, b)).share[0]
        for b in (0.0, 0.01, 0.05)
    ]
    assert shares == sorted(shares)


def test_select_thresholds_disables_a_useless_exit() -> None:
    labels = np.zeros(100, np.int64)
    wrong = np.tile([[0.0, 9.0]], (100, 1))  # always confidently wrong
    right = np.tile([[9.0, 0.0]], (100, 1))
    assert select_thresholds([wrong, right], labels, [1.0, 1.0], 0.0) == [None, 0.0]
