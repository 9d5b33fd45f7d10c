"""Off-policy evaluation of a target policy from logged decisions: per-decision importance
sampling (IPS) and the doubly robust estimator (Jiang & Li 2016) with a ridge-regression reward
model fitted by two-fold cross-fitting. Both return a mean with a normal 95% interval over
requests (each request is one episode of one or more decisions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from policy._base import ArmSpace, Featurizer, FloatArray, Policy
from policy._heuristic import arm_probabilities
from policy._simulator import Step
from policy._types import DecisionContext


@dataclass(frozen=True, slots=True)
class Estimate:
    """A value estimate (mean return per request) with its 95% confidence interval."""

    value: float
    low: float
    high: float
    n: int

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n}


def _estimate(per_episode: FloatArray) -> Estimate:
    n = per_episode.shape[0]
    mean = float(per_episode.mean())
    half = 1.96 * float(per_episode.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
    return Estimate(mean, mean - half, mean + half, n)


class RewardModel:
    """Ridge regression of the return-to-go on features, one model per arm (Q-hat)."""

    def __init__(
        self,
        space: ArmSpace,
        featurize: Callable[[DecisionContext], FloatArray],
        ridge: float = 1.0,
    ):
        self.space = space
        self.featurize = featurize
        self.ridge = ridge
        self.weights: FloatArray | None = None

    def fit(self, episodes: Sequence[Sequence[Step]]) -> RewardModel:
        d = self.featurize(DecisionContext()).shape[0]
        n = len(self.space)
        xtx = np.repeat(np.eye(d)[None] * self.ridge, n, axis=0)
        xty = np.zeros((n, d))
        for ep in episodes:
            togo = 0.0
            for step in reversed(ep):
                togo += step.reward
                a = self.space.index[step.decision.arm]
                x = self.featurize(step.context)
                xtx[a] += np.outer(x, x)
                xty[a] += togo * x
        self.weights = np.asarray(np.linalg.solve(xtx, xty[..., None])[..., 0], dtype=np.float64)
        return self

    def predict(self, ctx: DecisionContext) -> FloatArray:
        assert self.weights is not None
        return self.weights @ self.featurize(ctx)


def off_policy_evaluate(
    target: Policy,
    episodes: Sequence[Sequence[Step]],
    space: ArmSpace,
    *,
    featurize: Callable[[DecisionContext], FloatArray] | None = None,
    clip: float = 1e3,
) -> dict[str, Estimate]:
    """IPS and DR estimates of ``target``'s mean return per request from logged ``episodes``
    (each step's decision must carry the logging policy's propensity)."""
    featurize = featurize or Featurizer(space.profile.n_exits)
    half = len(episodes) // 2
    folds = [list(episodes[:half]), list(episodes[half:])]
    # Cross-fitting: each half is scored with the reward model fitted on the other half.
    models = [
        RewardModel(space, featurize).fit(folds[1]),
        RewardModel(space, featurize).fit(folds[0]),
    ]
    ips = np.empty(len(episodes))
    dr = np.empty(len(episodes))
    j = 0
    for fold, model in zip(folds, models, strict=True):
        for ep in fold:
            weight = 1.0
            ips_v = 0.0
            rho: list[float] = []
            qhat: list[float] = []
            vhat: list[float] = []
            for step in ep:
                probs = arm_probabilities(target, space, step.context)
                a = space.index[step.decision.arm]
                r = min(probs[a] / max(step.decision.propensity, 1e-12), clip)
                weight *= r
                ips_v += weight * step.reward
                q = model.predict(step.context)
                rho.append(r)
                qhat.append(float(q[a]))
                vhat.append(float(probs @ q))
            v_next = 0.0
            for t in reversed(range(len(ep))):
                v_next = vhat[t] + rho[t] * (ep[t].reward + v_next - qhat[t])
            ips[j], dr[j] = ips_v, v_next
            j += 1
    return {"ips": _estimate(ips), "dr": _estimate(dr)}


def on_policy_value(episodes: Sequence[Sequence[Step]]) -> Estimate:
    """Mean return per request of the policy that produced ``episodes``."""
    return _estimate(np.array([sum(s.reward for s in ep) for ep in episodes]))


__all__ = ["Estimate", "RewardModel", "off_policy_evaluate", "on_policy_value"]
