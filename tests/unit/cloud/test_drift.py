"""Drift detection: PSI/KL against a reference window, fed by the real edge head of the shipped
fmnist_branchy bundle on Fashion-MNIST test frames, then on rotated and noised frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud._drift import EXIT_CONFIDENCE, FEATURE_RMS, DriftMonitor, psi_kl, quantile_edges
from cloud._metrics import OTHER, GatewayMetrics
from cloud.core import InferenceRequest, TelemetryEvent
from common.bundle import load_bundle
from common.data import load_slice
from edge_agent import EdgeRuntime

ROOT = Path(__file__).resolve().parents[3]
MODEL = "fmnist_branchy"


def _sample(metrics: GatewayMetrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_identical_samples_have_zero_psi_and_kl() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=5000)
    edges = quantile_edges(ref, 10)
    psi, kl = psi_kl(ref, ref.copy(), edges)
    assert psi == pytest.approx(0.0, abs=1e-12) and kl == pytest.approx(0.0, abs=1e-12)


def test_psi_grows_with_the_shift_of_a_normal_distribution() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=20000)
    edges = quantile_edges(ref, 10)
    small, _ = psi_kl(ref, rng.normal(0.1, 1, 20000), edges)
    large, kl = psi_kl(ref, rng.normal(1.0, 1, 20000), edges)
    assert small < 0.05 < 0.25 < large and kl > 0.1


def test_a_signal_piled_at_one_value_gets_fewer_bins_not_an_error() -> None:
    ref = np.array([1.0] * 90 + [0.5] * 10)
    edges = quantile_edges(ref, 10)
    assert len(edges) < 9
    psi, _ = psi_kl(ref, np.array([0.5] * 100), edges)
    assert psi > 1.0


def test_hostile_labels_are_bounded_and_bad_values_skipped() -> None:
    m = GatewayMetrics()
    m.add_model(MODEL)
    m.set_regions({"eu"}, "us")
    d = DriftMonitor(m, reference_size=10, window_size=10, every=1)
    events = [
        TelemetryEvent(device_id="d", model_name=f"m{i}", region=f"r{i}", confidence=0.5)
        for i in range(100)
    ]
    events.append(TelemetryEvent(device_id="d", model_name=MODEL, confidence=float("nan")))
    events.append(TelemetryEvent(device_id="d", model_name=MODEL, confidence=7.0))
    d.on_telemetry(events)
    assert set(d._signals) == {("_unknown", OTHER, EXIT_CONFIDENCE)}
    nan = InferenceRequest(MODEL, "1", {"x": np.full((2, 4), np.nan, np.float32)})
    d.on_request(nan, "OK", None)
    assert (MODEL, "us", FEATURE_RMS) not in d._signals or not d._signals[
        (MODEL, "us", FEATURE_RMS)
    ].reference


def _frames() -> np.ndarray:
    images, _ = load_slice(ROOT / "models" / "data" / "fmnist_test_slice.npz")
    return images[np.random.default_rng(0).permutation(len(images))]  # no order by class


def _shift(images: np.ndarray, seed: int) -> np.ndarray:
    """Rotated by 90 degrees and noised: what a camera mounted sideways in the rain sees."""
    rng = np.random.default_rng(seed)
    rotated = np.rot90(images, k=1, axes=(1, 2)).astype(np.float64)
    noised = rotated + rng.normal(0, 40, rotated.shape)
    return np.clip(noised, 0, 255).astype(np.uint8)


def _feed(rt: EdgeRuntime, drift: DriftMonitor, images: np.ndarray, region: str) -> None:
    """Run each frame through the first head segment; report its exit confidence as telemetry
    and its cut1 features as an offloaded request would carry them."""
    cut = rt.bundle.cut_points[0]
    for img in images:
        state = rt.start(rt.prepare(img))
        (exit1,) = rt.step(state)
        drift.on_telemetry(
            [
                TelemetryEvent(
                    device_id="cam-1", model_name=MODEL, confidence=exit1.confidence, region=region
                )
            ]
        )
        features = state.tensors[cut.name]
        request = InferenceRequest(MODEL, "1", {"features": features}, region=region)
        drift.on_request(request, "OK", None)


def test_rotated_and_noised_frames_raise_psi_and_kl_of_both_signals() -> None:
    rt = EdgeRuntime(load_bundle(ROOT / "models" / MODEL))
    m = GatewayMetrics()
    m.add_model(MODEL)
    m.set_regions({"eu-west"})
    drift = DriftMonitor(m, reference_size=400, window_size=300, every=50)
    frames = _frames()
    _feed(rt, drift, frames[:400], "eu-west")  # the reference window
    _feed(rt, drift, frames[400:700], "eu-west")  # more of the same distribution
    stable = {s: drift.value(MODEL, "eu-west", s) for s in (EXIT_CONFIDENCE, FEATURE_RMS)}
    _feed(rt, drift, _shift(frames[700:1000], seed=0), "eu-west")
    shifted = {s: drift.value(MODEL, "eu-west", s) for s in (EXIT_CONFIDENCE, FEATURE_RMS)}
    for signal in (EXIT_CONFIDENCE, FEATURE_RMS):
        (psi0, kl0), (psi1, kl1) = stable[signal], shifted[signal]  # type: ignore[misc]
        assert psi0 < 0.15, (signal, psi0)  # sampling noise alone: about 0.05
        assert psi1 > 0.25 and psi1 > 5 * psi0, (signal, psi0, psi1)
        assert kl1 > kl0
        labels = {"model": MODEL, "region": "eu-west", "signal": signal}
        exported = _sample(m, "aiml021_gateway_drift_psi", labels)
        assert exported is not None and exported > 0.25
        assert _sample(m, "aiml021_gateway_drift_kl_divergence", labels) == pytest.approx(
            kl1, rel=0.5
        )
        window = _sample(m, "aiml021_gateway_drift_window_samples", {**labels, "phase": "current"})
        assert window == 300
