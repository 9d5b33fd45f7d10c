"""The Gaussian mechanism (clipping, calibrated noise) and the per-device privacy accountant."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidArgument, ResourceExhausted
from common.privacy import (
    FeaturePrivacySettings,
    GaussianMechanism,
    PrivacyAccountant,
    noise_multiplier,
)


def test_calibrated_noise_meets_the_target_and_beats_the_classic_bound() -> None:
    m = noise_multiplier(1.0, 1e-5)
    classic = math.sqrt(2 * math.log(1.25 / 1e-5)) / 1.0
    assert 3.0 < m < classic  # PLD calibration is tighter than sqrt(2 ln(1.25/δ))/ε
    # One release at that multiplier costs at most the target ε (RDP is a little looser).
    assert PrivacyAccountant.epsilon_of({m: 1}, 1e-5) == pytest.approx(1.0, rel=0.25)
    assert noise_multiplier(8.0, 1e-5) < noise_multiplier(1.0, 1e-5)


@pytest.mark.parametrize(
    ("eps", "delta"), [(0, 1e-5), (-1, 1e-5), (math.inf, 1e-5), (1, 0), (1, 1)]
)
def test_nonsense_privacy_parameters_are_refused(eps: float, delta: float) -> None:
    with pytest.raises(InvalidArgument):
        noise_multiplier(eps, delta)


def test_clipping_bounds_every_sample_and_keeps_small_ones() -> None:
    mech = GaussianMechanism(1.0, 1e-5, clip_norm=2.0)
    x = np.zeros((3, 4, 5, 5), np.float32)
    x[0] += 10.0  # large: clipped to norm 2
    x[1, 0, 0, 0] = 1.0  # small: unchanged
    clipped = mech.clip(x)
    norms = np.linalg.norm(clipped.reshape(3, -1), axis=1)
    assert norms[0] == pytest.approx(2.0, rel=1e-5)
    assert clipped[1, 0, 0, 0] == 1.0 and norms[2] == 0.0
    # Clipping scales, never changes direction.
    assert np.allclose(clipped[0] / norms[0], x[0] / np.linalg.norm(x[0]), atol=1e-6)


def test_noise_has_the_calibrated_standard_deviation() -> None:
    mech = GaussianMechanism(2.0, 1e-5, clip_norm=1.5)
    assert mech.sigma == pytest.approx(noise_multiplier(2.0, 1e-5) * 3.0)
    x = np.zeros((1, 64, 7, 7), np.float32)
    out = mech.apply(x, np.random.default_rng(0))
    assert out.dtype == np.float32 and out.shape == x.shape
    assert float(out.std()) == pytest.approx(mech.sigma, rel=0.05)
    # Fresh noise on every release (a fixed noise draw would cancel out by differencing).
    assert not np.array_equal(mech.apply(x), mech.apply(x))


def test_non_finite_features_are_refused_not_released() -> None:
    mech = GaussianMechanism(1.0, 1e-5, clip_norm=1.0)
    with pytest.raises(InvalidArgument, match="NaN"):
        mech.apply(np.array([[np.nan, 1.0]], np.float32))
    with pytest.raises(InvalidArgument, match="clip_norm"):
        GaussianMechanism(1.0, 1e-5, clip_norm=0.0)


def test_accountant_composes_sub_linearly_and_enforces_the_budget() -> None:
    mech = GaussianMechanism(1.0, 1e-5, clip_norm=1.0)
    acc = PrivacyAccountant(1e-5)
    first = acc.charge(mech)
    for _ in range(99):
        last = acc.charge(mech)
    assert acc.releases == {mech.noise_multiplier: 100}
    assert first < last < 100 * first  # composition beats adding ε up
    limited = PrivacyAccountant(1e-5, budget_epsilon=first * 2.5)
    limited.charge(mech)
    limited.charge(mech)
    spent = limited.spent()
    charged = 2
    with pytest.raises(ResourceExhausted, match="privacy budget"):
        for _ in range(100):
            limited.charge(mech)
            charged += 1
    assert limited.releases[mech.noise_multiplier] == charged  # the refused one is not recorded
    assert limited.spent() >= spent


def test_ledger_survives_a_restart_and_a_damaged_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.json"
    mech = GaussianMechanism(4.0, 1e-5, clip_norm=1.0)
    acc = PrivacyAccountant(1e-5, state_path=path)
    acc.charge(mech)
    acc.charge(mech)
    again = PrivacyAccountant(1e-5, state_path=path)
    assert again.releases == {mech.noise_multiplier: 2}
    assert again.spent() == pytest.approx(acc.spent())
    path.write_text("{not json")
    with pytest.raises(InvalidArgument, match=r"ledger\.json"):
        PrivacyAccountant(1e-5, state_path=path)
    path.write_text(json.dumps({"releases": []}))
    with pytest.raises(InvalidArgument, match="releases"):
        PrivacyAccountant(1e-5, state_path=path)


def test_settings_are_off_by_default_and_resolve_org_then_model() -> None:
    assert FeaturePrivacySettings().mechanisms("m", ["cut1"]) == {}
    s = FeaturePrivacySettings.model_validate(
        {
            "clip_norm": 3.0,
            "org": "acme",
            "orgs": {"acme": {"enabled": True, "epsilon": 2.0}, "other": {"epsilon": 0.1}},
            "models": {"ocr": {"epsilon": 0.5, "cut_clip_norm": {"cut2": 9.0}}},
        }
    )
    fm = s.mechanisms("fmnist", ["cut1", "cut2"])
    assert {c: (m.epsilon, m.clip_norm) for c, m in fm.items()} == {
        "cut1": (2.0, 3.0),
        "cut2": (2.0, 3.0),
    }
    ocr = s.mechanisms("ocr", ["cut1", "cut2"])
    assert ocr["cut1"].epsilon == 0.5 and ocr["cut2"].clip_norm == 9.0
    off = FeaturePrivacySettings.model_validate(
        {"enabled": True, "clip_norm": 1.0, "models": {"m": {"enabled": False}}}
    )
    assert off.mechanisms("m", ["cut1"]) == {}


def test_enabled_without_a_clipping_norm_names_the_setting() -> None:
    s = FeaturePrivacySettings(enabled=True)
    with pytest.raises(ValueError, match=r"privacy\.clip_norm"):
        s.mechanisms("m", ["cut1"])
