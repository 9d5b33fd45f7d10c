"""Contextual bandits over the arm catalogue: disjoint LinUCB and linear Thompson sampling.

Both keep, per arm, a ridge regression of the request's return (negative combined cost) on the
feature vector, updated online with Sherman–Morrison. A CONTINUE_LOCAL arm is credited with the
return of the rest of the request (Monte Carlo credit).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policy._base import FloatArray
from policy._learned import LearnedPolicy
from policy._profile import BundleProfile
from policy._types import Outcome


class _LinearArms(LearnedPolicy):
    def __init__(self, profile: BundleProfile, *, ridge: float = 1.0, **kwargs: Any) -> None:
        super().__init__(profile, **kwargs)
        d, n = self.feature_dim, self.n_arms
        self.ridge = ridge
        self.a_inv = np.repeat(np.eye(d)[None] / ridge, n, axis=0)
        self.b = np.zeros((n, d))
        self.theta = np.zeros((n, d))
        self.counts = np.zeros(n, dtype=np.int64)
        self._cache: tuple[FloatArray, FloatArray, FloatArray] | None = None

    def _variances(self, x: FloatArray) -> FloatArray:
        quad = (np.matmul(self.a_inv, x[..., None])[..., 0] * x).sum(axis=-1)
        return np.maximum(quad, 0.0)

    def _mean(self, x: FloatArray) -> FloatArray:
        return np.einsum("ad,ad->a", self.theta, x)

    def learn(self, x: FloatArray, arm: int, outcome: Outcome) -> None:
        x = x[arm]
        a_inv = self.a_inv[arm]
        u = a_inv @ x
        a_inv -= np.outer(u, u) / (1.0 + x @ u)
        self.b[arm] += outcome.return_to_go * x
        self.theta[arm] = a_inv @ self.b[arm]
        self.counts[arm] += 1
        self._cache = None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            ridge=self.ridge,
            a_inv=self.a_inv.tolist(),
            b=self.b.tolist(),
            counts=self.counts.tolist(),
        )
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if "a_inv" in state:
            self.a_inv = np.asarray(state["a_inv"], dtype=np.float64)
            self.b = np.asarray(state["b"], dtype=np.float64)
            self.counts = np.asarray(state["counts"], dtype=np.int64)
            self.theta = np.einsum("aij,aj->ai", self.a_inv, self.b)


class LinUCBPolicy(_LinearArms):
    """Disjoint LinUCB (Li et al. 2010): mean + alpha * predictive standard deviation."""

    kind = "linucb"

    def __init__(self, profile: BundleProfile, *, alpha: float = 0.5, **kwargs: Any) -> None:
        super().__init__(profile, **kwargs)
        self.alpha = alpha

    def scores(self, x: FloatArray, *, explore: bool) -> FloatArray:
        mean = self._mean(x)
        if not explore or self.alpha == 0.0:
            return mean
        return mean + self.alpha * np.sqrt(self._variances(x))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "alpha": self.alpha}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.alpha = float(state.get("alpha", self.alpha))


class ThompsonPolicy(_LinearArms):
    """Linear Gaussian Thompson sampling (Agrawal & Goyal 2013).

    For one context, sampling the weights is the same as sampling each arm's score from
    N(mean, v² xᵀA⁻¹x), so no Cholesky factor is needed per decision. The propensity of the chosen
    arm is estimated from ``propensity_samples`` extra draws.
    """

    kind = "thompson"

    def __init__(
        self,
        profile: BundleProfile,
        *,
        v: float = 0.3,
        propensity_samples: int = 32,
        **kwargs: Any,
    ) -> None:
        super().__init__(profile, **kwargs)
        self.v = v
        self.propensity_samples = propensity_samples

    def _posterior(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        # decide() asks for scores and then the propensity of the same x: compute once.
        cached = self._cache
        if cached is not None and cached[0] is x:
            return cached[1], cached[2]
        mean = self._mean(x)
        sd = self.v * np.sqrt(self._variances(x))
        self._cache = (x, mean, sd)
        return mean, sd

    def scores(self, x: FloatArray, *, explore: bool) -> FloatArray:
        if not explore or self.v == 0.0:
            return self._mean(x)
        mean, sd = self._posterior(x)
        return mean + sd * self.rng.standard_normal(mean.shape[0])

    def greedy_probabilities(self, x: FloatArray, mask: np.ndarray) -> FloatArray:
        m = max(self.propensity_samples, 1)
        mean, sd = self._posterior(x)
        valid = np.flatnonzero(mask)
        draws = mean[valid] + sd[valid] * self.rng.standard_normal((m, valid.shape[0]))
        counts = np.bincount(draws.argmax(axis=1), minlength=valid.shape[0])
        probs = np.zeros(mean.shape[0])
        # Laplace-smoothed so that a rarely drawn arm never gets propensity 0.
        probs[valid] = (counts + 1.0) / (m + valid.shape[0])
        return probs

    def _propensity(self, x: FloatArray, mask: np.ndarray, chosen: int, greedy: int) -> float:
        if self.propensity_samples <= 0:
            return float("nan")
        probs = self.greedy_probabilities(x, mask)
        n_valid = int(mask.sum())
        return float((1.0 - self.epsilon) * probs[chosen] + self.epsilon / n_valid)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "v": self.v}

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.v = float(state.get("v", self.v))


__all__ = ["LinUCBPolicy", "ThompsonPolicy"]
