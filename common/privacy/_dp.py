"""Local differential privacy for offloaded features: the Gaussian mechanism and a per-device
privacy accountant.

The device clips each request's feature tensor to L2 norm ``clip_norm`` and adds Gaussian noise
before it is coded, so what leaves the device is (ε, δ)-differentially private with respect to the
whole input of that request: any two inputs give clipped features at most ``2 * clip_norm`` apart
(the sensitivity), and the noise's standard deviation is ``noise_multiplier * sensitivity``.

The mathematics is Google's ``dp-accounting``: :func:`noise_multiplier` calibrates σ for a target
(ε, δ) from the Gaussian mechanism's exact privacy loss (the "analytic Gaussian", tight for one
release; less noise than the classic ``sqrt(2 ln(1.25/δ)) / ε`` bound, which also holds only for
ε < 1), and
:class:`PrivacyAccountant` composes every release of one device over time with its Rényi-DP
accountant, so ε spent grows sub-linearly with the number of requests instead of adding up.
"""

from __future__ import annotations

import functools
import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InvalidArgument, ResourceExhausted


@functools.lru_cache(maxsize=256)
def noise_multiplier(epsilon: float, delta: float) -> float:
    """σ / sensitivity of the Gaussian mechanism that is (``epsilon``, ``delta``)-DP for one
    release: the exact (analytic) privacy loss of dp-accounting's ``GaussianPrivacyLoss``, solved
    for σ by root finding (cached)."""
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise InvalidArgument(f"epsilon must be a positive finite number, got {epsilon}")
    if not 0 < delta < 1:
        raise InvalidArgument(f"delta must be in (0, 1), got {delta}")
    from dp_accounting.pld.privacy_loss_mechanism import GaussianPrivacyLoss
    from scipy.optimize import brentq

    def excess(multiplier: float) -> float:
        loss = GaussianPrivacyLoss(multiplier, sensitivity=1.0)
        return float(loss.get_delta_for_epsilon(epsilon)) - delta

    lo, hi = 1e-6, 1e6
    if excess(hi) > 0:
        raise InvalidArgument(f"(ε={epsilon}, δ={delta}) needs more noise than is sensible")
    if excess(lo) <= 0:
        return lo
    root = float(brentq(excess, lo, hi, xtol=1e-12, rtol=1e-10))
    return root * (1 + 1e-6)  # δ falls as σ grows: round towards more noise


@dataclass(frozen=True)
class GaussianMechanism:
    """Per-request L2 clipping plus Gaussian noise calibrated to (ε, δ)."""

    epsilon: float
    delta: float
    clip_norm: float

    def __post_init__(self) -> None:
        if not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise InvalidArgument(f"clip_norm must be a positive number, got {self.clip_norm}")
        noise_multiplier(self.epsilon, self.delta)  # validates and warms the cache

    @property
    def sensitivity(self) -> float:
        """Largest L2 distance between the clipped features of two inputs."""
        return 2.0 * self.clip_norm

    @property
    def noise_multiplier(self) -> float:
        """σ / sensitivity (what the accountant composes)."""
        return noise_multiplier(self.epsilon, self.delta)

    @property
    def sigma(self) -> float:
        """Standard deviation of the noise added to every element."""
        return self.noise_multiplier * self.sensitivity

    def clip(self, features: np.ndarray) -> np.ndarray:
        """Each sample (first axis) scaled down to L2 norm at most ``clip_norm`` (float32)."""
        x = np.asarray(features, dtype=np.float32)
        if x.ndim == 0:
            raise InvalidArgument("features must have a batch axis")
        flat = x.reshape(x.shape[0], -1).astype(np.float64)
        if not np.all(np.isfinite(flat)):
            # NaN/inf would make the norm (and the clip) meaningless: nothing private would leave.
            raise InvalidArgument("features contain NaN or infinity; refusing to release them")
        norms = np.linalg.norm(flat, axis=1, keepdims=True)
        scale = np.minimum(1.0, self.clip_norm / np.maximum(norms, 1e-12))
        return (flat * scale).reshape(x.shape).astype(np.float32)

    def apply(self, features: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The privatised features: clipped per sample, plus N(0, σ²) noise on every element.
        ``rng`` defaults to a generator seeded from the operating system's entropy."""
        clipped = self.clip(features)
        gen = rng if rng is not None else np.random.default_rng()
        noise = gen.normal(0.0, self.sigma, size=clipped.shape)
        return (clipped + noise).astype(np.float32)


class PrivacyAccountant:
    """ε spent by one device over time, composed with dp-accounting's RDP accountant.

    Holds how many releases were made at each noise multiplier; ``state_path`` (optional) keeps
    that across restarts (written atomically after every charge). With ``budget_epsilon`` set,
    :meth:`charge` refuses a release that would take the device past it (ResourceExhausted) and
    records nothing.
    """

    def __init__(
        self,
        delta: float,
        budget_epsilon: float | None = None,
        state_path: Path | None = None,
    ) -> None:
        if not 0 < delta < 1:
            raise InvalidArgument(f"accountant delta must be in (0, 1), got {delta}")
        if budget_epsilon is not None and not budget_epsilon > 0:
            raise InvalidArgument(f"budget_epsilon must be positive, got {budget_epsilon}")
        self.delta = delta
        self.budget_epsilon = budget_epsilon
        self._path = state_path
        self._lock = threading.Lock()
        self._releases: dict[float, int] = self._load() if state_path else {}

    def _load(self) -> dict[float, int]:
        assert self._path is not None
        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # Refuse to start from zero on a damaged ledger: that would silently reset the budget.
            raise InvalidArgument(f"privacy accountant state {self._path}: {exc}") from None
        releases = raw.get("releases", {}) if isinstance(raw, dict) else None
        if not isinstance(releases, dict):
            raise InvalidArgument(f"privacy accountant state {self._path}: no releases table")
        return {float(k): int(v) for k, v in releases.items()}

    def _save(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self._path.with_name(self._path.name + ".tmp")
        body = {"delta": self.delta, "releases": {repr(k): v for k, v in self._releases.items()}}
        tmp.write_text(json.dumps(body))
        os.replace(tmp, self._path)

    @property
    def releases(self) -> Mapping[float, int]:
        """Noise multiplier -> number of releases charged at it."""
        return dict(self._releases)

    @staticmethod
    def epsilon_of(releases: Mapping[float, int], delta: float) -> float:
        """ε at ``delta`` of the composition of ``releases`` (0 for none)."""
        events = [(m, n) for m, n in releases.items() if n > 0]
        if not events:
            return 0.0
        import dp_accounting
        from dp_accounting.rdp import RdpAccountant

        acc = RdpAccountant()
        for multiplier, count in events:
            acc.compose(dp_accounting.GaussianDpEvent(multiplier), count)
        return float(acc.get_epsilon(delta))

    def spent(self) -> float:
        """ε spent so far (at the accountant's δ)."""
        with self._lock:
            return self.epsilon_of(self._releases, self.delta)

    def charge(self, mechanism: GaussianMechanism) -> float:
        """Record one release by ``mechanism``; the ε spent after it. Raises ResourceExhausted
        (recording nothing) when it would exceed the budget."""
        m = mechanism.noise_multiplier
        with self._lock:
            after = dict(self._releases)
            after[m] = after.get(m, 0) + 1
            eps = self.epsilon_of(after, self.delta)
            if self.budget_epsilon is not None and eps > self.budget_epsilon:
                raise ResourceExhausted(
                    f"privacy budget spent: one more release would bring this device to "
                    f"ε={eps:.3g} > budget {self.budget_epsilon:g} (δ={self.delta:g}); "
                    "features stay on the device"
                )
            self._releases = after
            self._save()
            return eps


__all__ = ["GaussianMechanism", "PrivacyAccountant", "noise_multiplier"]
