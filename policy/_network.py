"""Network scenarios for the simulator: steady, varying bandwidth (a Markov chain over link
levels, each with its own RTT) and periodic outages, plus the lagged, noisy estimate the device
sees (it measures the network from past traffic, so it is always a little behind)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.errors import InvalidArgument

Floats = npt.NDArray[np.float64]

# (bandwidth Mbit/s, RTT ms) per level of the varying scenario: 3G-ish to Wi-Fi.
VARYING_LEVELS: tuple[tuple[float, float], ...] = (
    (0.25, 180.0),
    (1.0, 120.0),
    (4.0, 60.0),
    (15.0, 30.0),
    (60.0, 12.0),
)


@dataclass(frozen=True, slots=True)
class NetworkSample:
    """Per-request truth and what the device estimated at decision time (0 = link down)."""

    bandwidth_mbps: Floats
    rtt_ms: Floats
    est_bandwidth_mbps: Floats
    est_rtt_ms: Floats
    edge_load: Floats


@dataclass(frozen=True, slots=True)
class NetworkScenario:
    """A network scenario. ``kind`` is ``steady``, ``varying`` or ``outages``."""

    kind: str = "varying"
    bandwidth_mbps: float = 10.0
    """Steady/outage scenarios: link bandwidth."""
    rtt_ms: float = 40.0
    """Steady/outage scenarios: round-trip time."""
    dwell_s: float = 4.0
    """Varying scenario: mean time spent at one level."""
    outage_every_s: float = 30.0
    outage_s: float = 4.0
    jitter: float = 0.15
    """Per-request lognormal spread of bandwidth and RTT around the level."""
    estimate_lag_s: float = 0.5
    """The device's estimate is the truth this long ago ..."""
    estimate_noise: float = 0.1
    """... times a lognormal error of this spread."""
    load_mean: float = 0.3

    def __post_init__(self) -> None:
        if self.kind not in ("steady", "varying", "outages"):
            raise InvalidArgument(f"network scenario: unknown kind {self.kind!r}")

    def _levels(self, times: Floats, rng: np.random.Generator) -> tuple[Floats, Floats]:
        if self.kind == "varying":
            n_lv = len(VARYING_LEVELS)
            bws = np.array([b for b, _ in VARYING_LEVELS])
            rtts = np.array([r for _, r in VARYING_LEVELS])
            horizon = float(times[-1]) + self.estimate_lag_s + 1.0
            switch_t = [0.0]
            levels = [int(rng.integers(n_lv))]
            while switch_t[-1] < horizon:
                switch_t.append(switch_t[-1] + rng.exponential(self.dwell_s))
                step = int(rng.choice([-2, -1, 1, 2]))
                levels.append(int(np.clip(levels[-1] + step, 0, n_lv - 1)))
            lv = np.asarray(levels)[np.searchsorted(switch_t, times, side="right") - 1]
            return bws[lv], rtts[lv]
        bw = np.full(times.shape, self.bandwidth_mbps)
        rtt = np.full(times.shape, self.rtt_ms)
        if self.kind == "outages":
            phase = np.mod(times, self.outage_every_s)
            bw = np.where(phase >= self.outage_every_s - self.outage_s, 0.0, bw)
        return bw, rtt

    def sample(self, times: Floats, rng: np.random.Generator) -> NetworkSample:
        """Truth at ``times`` (seconds, sorted) and the device's estimate of it."""
        times = np.asarray(times, dtype=np.float64)
        lagged = np.maximum(times - self.estimate_lag_s, 0.0)
        both = np.concatenate([times, lagged])
        order = np.argsort(both, kind="stable")
        bw_s, rtt_s = self._levels(both[order], rng)
        bw_all = np.empty_like(both)
        rtt_all = np.empty_like(both)
        bw_all[order], rtt_all[order] = bw_s, rtt_s
        n = times.shape[0]
        jit = np.exp(self.jitter * rng.standard_normal((2, n)))
        bw, rtt = bw_all[:n] * jit[0], rtt_all[:n] * jit[1]
        noise = np.exp(self.estimate_noise * rng.standard_normal((2, n)))
        est_bw, est_rtt = bw_all[n:] * noise[0], rtt_all[n:] * noise[1]
        t = times
        load = np.clip(
            self.load_mean + 0.25 * np.sin(2 * np.pi * t / 90.0) + 0.1 * rng.standard_normal(n),
            0.0,
            1.0,
        )
        return NetworkSample(bw, rtt, est_bw, est_rtt, load)


SCENARIOS: dict[str, NetworkScenario] = {
    "steady": NetworkScenario("steady", bandwidth_mbps=10.0, rtt_ms=40.0),
    "varying": NetworkScenario("varying"),
    "outages": NetworkScenario("outages", bandwidth_mbps=10.0, rtt_ms=40.0),
}
"""Named profiles used by the simulator CLI and benchmarks."""


__all__ = ["SCENARIOS", "VARYING_LEVELS", "NetworkSample", "NetworkScenario"]
