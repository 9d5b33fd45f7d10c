"""common.confidence: the one temperature-scaled softmax."""

from __future__ import annotations

import numpy as np
import pytest

from common.confidence import softmax, top_class


def test_softmax_by_hand() -> None:
    p = softmax([[0.0, np.log(3.0)]])
    assert p.dtype == np.float64
    assert p[0, 1] == pytest.approx(0.75)


def test_rows_sum_to_one_over_the_last_axis_and_large_logits_stay_finite() -> None:
    logits = np.random.default_rng(0).normal(size=(2, 3, 10)).astype(np.float32) * 1000
    p = softmax(logits, 0.5)
    assert p.shape == logits.shape and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(axis=-1), 1.0)


def test_temperature_flattens_and_sharpens_without_moving_the_argmax() -> None:
    logits = np.array([2.0, 1.0, 0.5])
    hot, cold = softmax(logits, 4.0), softmax(logits, 0.25)
    assert hot.max() < softmax(logits).max() < cold.max()
    assert hot.argmax() == cold.argmax() == 0


def test_zero_temperature_is_clamped_not_a_division_by_zero() -> None:
    top, conf = top_class([1.0, 3.0, 2.0], 0.0)
    assert top == 1 and conf == pytest.approx(1.0)


def test_top_class_reads_one_vector_of_any_shape() -> None:
    top, conf = top_class(np.array([[0.0, np.log(3.0)]], np.float32), 1.0)
    assert top == 1 and conf == pytest.approx(0.75)
