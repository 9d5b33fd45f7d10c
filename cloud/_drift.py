"""Drift of what devices see: PSI and KL divergence of a signal's recent window against its
reference window, per model, region and signal, exported as gauges.

Signals:

- ``exit_confidence`` — the calibrated confidence of every answer devices report in telemetry
  (early exits and cloud answers alike): a camera that fogs up or a new kind of scene moves it;
- ``feature_rms`` — the root mean square of each offloaded sample's features (or input) as the
  gateway decodes it: a summary of the embedding the tail model receives.

The first ``reference_size`` samples of a (model, region, signal) are its reference; bins are the
reference's quantiles (``bins`` of them, so each holds about the same share). From then on the
last ``window_size`` samples are compared with it every ``every`` new samples:
PSI = Σ (c - r) · ln(c / r) and KL(current ‖ reference) = Σ c · ln(c / r) over the bins, with
empty bins smoothed by ``EPSILON``. Rule of thumb: PSI under 0.1 is stable, over 0.25 a shift.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cloud._metrics import GatewayMetrics
from cloud.core import InferenceRequest, InferenceResult, TelemetryEvent

log = logging.getLogger(__name__)

EPSILON = 1e-4
"""Share given to an empty bin (keeps the logarithms finite)."""
EXIT_CONFIDENCE = "exit_confidence"
FEATURE_RMS = "feature_rms"


def psi_kl(reference: np.ndarray, current: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    """(PSI, KL(current ‖ reference)) of two samples over bins with inner ``edges``."""
    r = _shares(reference, edges)
    c = _shares(current, edges)
    ratio = np.log(c / r)
    return float(np.sum((c - r) * ratio)), float(np.sum(c * ratio))


def quantile_edges(reference: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges at the reference's quantiles (duplicates merged: a signal piled up at one
    value, like confidences at 1.0, gets fewer, wider bins)."""
    qs = np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    shares = counts / max(1, len(values))
    shares = np.maximum(shares, EPSILON)
    return shares / shares.sum()


@dataclass(slots=True)
class _Signal:
    reference: list[float] = field(default_factory=list)
    edges: np.ndarray | None = None
    ref: np.ndarray | None = None
    window: collections.deque[float] = field(default_factory=collections.deque)
    since: int = 0


class DriftMonitor:
    """Tracks drift signals and sets ``aiml021_gateway_drift_*`` (one per gateway).

    Hooked into the data plane: :meth:`on_request` for each finished request (features),
    :meth:`on_telemetry` for each telemetry batch (confidences)."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        reference_size: int = 1000,
        window_size: int = 1000,
        bins: int = 10,
        every: int = 50,
    ) -> None:
        self._m = metrics
        self.reference_size = reference_size
        self.window_size = window_size
        self.bins = bins
        self.every = every
        self._signals: dict[tuple[str, str, str], _Signal] = {}

    def observe(self, model: str, region: str, signal: str, values: Sequence[float]) -> None:
        """Add samples of ``signal`` (labels bounded as the metrics bound them)."""
        m = self._m
        key = (m.bounded_label("model", model), m.region(region), signal)
        s = self._signals.get(key)
        if s is None:
            s = self._signals[key] = _Signal(window=collections.deque(maxlen=self.window_size))
        for v in values:
            if s.ref is None:
                s.reference.append(float(v))
                if len(s.reference) >= self.reference_size:
                    self._freeze(s)
                continue
            s.window.append(float(v))
            s.since += 1
        phase = "reference" if s.ref is None else "current"
        count = len(s.reference) if s.ref is None else len(s.window)
        m.drift_window.labels(*key, phase).set(count)
        if s.ref is not None and s.since >= self.every:
            s.since = 0
            self._update(key, s)

    def _freeze(self, s: _Signal) -> None:
        s.ref = np.asarray(s.reference, dtype=np.float64)
        s.edges = quantile_edges(s.ref, self.bins)
        s.reference = []

    def _update(self, key: tuple[str, str, str], s: _Signal) -> None:
        assert s.ref is not None and s.edges is not None
        psi, kl = psi_kl(s.ref, np.fromiter(s.window, dtype=np.float64), s.edges)
        self._m.drift_psi.labels(*key).set(psi)
        self._m.drift_kl.labels(*key).set(kl)

    def value(self, model: str, region: str, signal: str) -> tuple[float, float] | None:
        """(PSI, KL) now, computed over the whole current window (None before a reference and
        a current sample exist)."""
        m = self._m
        s = self._signals.get((m.bounded_label("model", model), m.region(region), signal))
        if s is None or s.ref is None or s.edges is None or not s.window:
            return None
        return psi_kl(s.ref, np.fromiter(s.window, dtype=np.float64), s.edges)

    def on_request(
        self, request: InferenceRequest, status: str, result: InferenceResult | None
    ) -> None:
        """Features of a computed request: the RMS of each sample of its first input."""
        if status != "OK" or not request.inputs:
            return
        x = next(iter(request.inputs.values()))
        if x.ndim == 0 or x.shape[0] == 0 or not np.issubdtype(x.dtype, np.number):
            return
        flat = x.reshape(x.shape[0], -1).astype(np.float32, copy=False)
        rms = np.sqrt(np.mean(np.square(flat, dtype=np.float64), axis=1))
        rms = rms[np.isfinite(rms)]
        self.observe(request.model_name, request.region, FEATURE_RMS, rms.tolist())

    def on_telemetry(self, events: Sequence[TelemetryEvent]) -> None:
        """Confidences devices report (answers without a confidence are skipped)."""
        for e in events:
            if e.model_name and 0.0 < e.confidence <= 1.0:
                self.observe(e.model_name, e.region, EXIT_CONFIDENCE, (e.confidence,))


__all__ = [
    "EXIT_CONFIDENCE",
    "FEATURE_RMS",
    "DriftMonitor",
    "psi_kl",
    "quantile_edges",
]
