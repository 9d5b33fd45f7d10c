"""Line scores and their calibration on held-out data."""

from __future__ import annotations

import numpy as np
import pytest

from common.bundle import ece
from common.pipeline._confidence import (
    apply_calibration,
    choose_method,
    cross_validated_brier,
    cross_validated_ece,
    fit_binned_isotonic,
    fit_isotonic,
    fit_platt,
    line_score,
    reliability,
)
from common.pipeline._ctc import Decoded


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores near 1 whose lines are right far less often than the score says."""
    rng = np.random.default_rng(seed)
    scores = 1 - rng.beta(1, 12, n)
    correct = rng.random(n) < scores**8
    return scores, correct


def test_line_score_is_the_mean_or_min_of_step_probabilities() -> None:
    # a blank step at 0.4 (a hesitation between blank and a character) shows only in path_min
    d = Decoded("ab", np.array([0.9, 0.5], np.float32), np.array([0.9, 0.4, 0.5], np.float32))
    assert line_score(d, "mean") == pytest.approx(0.7)
    assert line_score(d, "min") == pytest.approx(0.5)
    assert line_score(d, "path_min") == pytest.approx(0.4)
    assert line_score(Decoded("", np.zeros(0, np.float32))) == 0.0
    with pytest.raises(ValueError, match="reduce"):
        line_score(d, "max")


@pytest.mark.parametrize("fit", [fit_platt, fit_isotonic])
def test_calibration_fitted_on_one_split_lowers_ece_on_another(fit: object) -> None:
    cal_scores, cal_correct = _overconfident(4000, 1)
    test_scores, test_correct = _overconfident(4000, 2)
    params = fit(cal_scores, cal_correct)  # type: ignore[operator]
    before = ece(test_scores, test_correct)
    after = ece(apply_calibration(test_scores, params), test_correct)
    assert before > 0.1
    assert after < 0.03


def test_the_method_is_chosen_by_cross_validation_on_the_calibration_split() -> None:
    # right 20% of the time below 0.6, 90% above: a step isotonic follows, a logistic curve cannot
    rng = np.random.default_rng(4)
    scores = rng.random(2000)
    correct = rng.random(2000) < np.where(scores < 0.6, 0.2, 0.9)
    assert cross_validated_brier(scores, correct, "isotonic") < cross_validated_brier(
        scores, correct, "platt"
    )
    assert choose_method(scores, correct) in ("isotonic", "binned_isotonic")


def test_binned_isotonic_keeps_steps_of_at_least_its_share_and_stays_monotone() -> None:
    scores, correct = _overconfident(1000, 5)
    plain = fit_isotonic(scores, correct)
    binned = fit_binned_isotonic(scores, correct)
    assert binned["method"] == "isotonic" and binned["min_block"] == 50
    assert len(binned["x"]) < len(plain["x"])
    assert np.all(np.diff(binned["y"]) >= 0) and np.all(np.diff(binned["x"]) > 0)
    assert len(binned["x"]) <= 1000 // 50  # every step holds at least 50 lines
    p = apply_calibration(np.linspace(0, 1, 101), binned)
    assert np.all(np.diff(p) >= 0)
    # held-out ECE is what chooses between methods (never the test split)
    assert 0 <= cross_validated_ece(scores, correct, "binned_isotonic") < 0.05


def test_platt_stays_finite_on_separable_data() -> None:
    params = fit_platt([0.1, 0.2, 0.8, 0.9], [False, False, True, True])
    assert np.isfinite([params["a"], params["b"]]).all()
    p = apply_calibration([0.1, 0.9], params)
    assert p[0] < 0.5 < p[1]


def test_isotonic_is_monotone() -> None:
    scores, correct = _overconfident(500, 3)
    params = fit_isotonic(scores, correct)
    p = apply_calibration(np.linspace(0, 1, 101), params)
    assert np.all(np.diff(p) >= 0)


def test_identity_passes_scores_through_and_unknown_methods_are_rejected() -> None:
    assert apply_calibration([0.3], {"method": "identity"}).tolist() == [0.3]
    with pytest.raises(ValueError, match="unknown calibration method"):
        apply_calibration([0.3], {"method": "magic"})


def test_reliability_table_counts_lines_per_bin() -> None:
    table = reliability([0.05, 0.95, 0.97, 1.0], [False, True, False, True])
    assert len(table) == 10 and sum(row["n"] for row in table) == 4
    assert table[0] == {"lo": 0.0, "hi": 0.1, "n": 1, "confidence": 0.05, "accuracy": 0.0}
    assert table[9]["n"] == 3 and table[9]["accuracy"] == pytest.approx(2 / 3)
