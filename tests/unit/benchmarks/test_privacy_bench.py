"""The leakage benchmark's measures: PSNR, SSIM, CER and the linear attacker are right on cases
with known answers (the benchmark itself runs as a command, not in CI)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.privacy._workloads import cer
from benchmarks.privacy.leakage import fit_ridge, psnr, ssim


def test_psnr_and_ssim_of_known_pairs() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((4, 28, 28)).astype(np.float32)
    assert psnr(x, x) == pytest.approx(100.0)
    assert psnr(x, np.clip(x + 0.1, 0, 1)) < psnr(x, np.clip(x + 0.01, 0, 1))
    assert psnr(np.zeros((1, 8, 8)), np.full((1, 8, 8), 0.1)) == pytest.approx(20.0)
    assert ssim(x, x) == pytest.approx(1.0)
    assert ssim(x, rng.random((4, 28, 28))) < 0.2


def test_cer_is_edit_distance_over_truth_length() -> None:
    assert cer("SN 1234", "SN 1234") == 0.0
    assert cer("SN 1284", "SN 1234") == pytest.approx(1 / 7)
    assert cer("", "abc") == 1.0 and cer("abcd", "abc") == pytest.approx(1 / 3)


def test_linear_attacker_inverts_a_linear_release() -> None:
    rng = np.random.default_rng(1)
    images = rng.random((300, 6, 6))
    mix = rng.standard_normal((36, 100))
    feats = (images.reshape(300, -1) @ mix).reshape(300, 100, 1, 1)
    decoder = fit_ridge(feats[:250], images[:250])
    assert psnr(decoder(feats[250:]), images[250:]) > 30  # features that are a rotation leak all
    noise = rng.standard_normal(feats.shape) * 1e3
    blind = fit_ridge(feats[:250] + noise[:250], images[:250])
    assert psnr(blind(feats[250:] + noise[250:]), images[250:]) < 12  # drowned: about the mean
