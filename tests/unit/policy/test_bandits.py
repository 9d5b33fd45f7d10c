"""LinUCB and Thompson sampling: regret falls on a synthetic problem with a known best arm."""

from __future__ import annotations

import numpy as np
import pytest

from policy import (
    Action,
    BundleProfile,
    DecisionContext,
    LinUCBPolicy,
    Outcome,
    ThompsonPolicy,
    dumps_state,
    policy_from_state,
)
from policy._learned import LearnedPolicy


def mean_reward(ctx: DecisionContext, action: Action, cut: str) -> float:
    """Known means: offloading the raw input is best on a fast link, exiting on a slow one."""
    fast = ctx.bandwidth_mbps > 5.0
    if action is Action.OFFLOAD and cut == "input":
        return -0.1 if fast else -0.9
    if action is Action.EXIT_LOCAL:
        return -0.5
    return -0.7


def run(policy: LearnedPolicy, rounds: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    regret = np.empty(rounds)
    for t in range(rounds):
        bw = float(rng.choice([1.0, 20.0]))
        ctx = DecisionContext(exit_index=0, confidences=(float(rng.random()),), bandwidth_mbps=bw)
        d = policy.decide(ctx)
        assert 0.0 < d.propensity <= 1.0
        mu = mean_reward(ctx, d.action, d.cut_point)
        best = -0.1 if bw > 5.0 else -0.5
        regret[t] = best - mu
        policy.update(Outcome(ctx, d, reward=mu + 0.3 * float(rng.standard_normal())))
    return regret


@pytest.mark.parametrize("cls", [LinUCBPolicy, ThompsonPolicy])
def test_regret_decreases_and_best_arm_dominates(
    cls: type[LearnedPolicy], profile: BundleProfile
) -> None:
    policy = cls(profile, seed=1)
    regret = run(policy, 1500, seed=2)
    first, last = regret[:300].mean(), regret[-300:].mean()
    assert last < 0.5 * first
    assert last < 0.08  # almost always the best arm per context at the end


def test_linucb_state_round_trip_gives_identical_scores(profile: BundleProfile) -> None:
    policy = LinUCBPolicy(profile, seed=0, alpha=0.7)
    run(policy, 200, seed=3)
    clone = policy_from_state(dumps_state(policy))
    assert isinstance(clone, LinUCBPolicy) and clone.alpha == 0.7
    ctx = DecisionContext(confidences=(0.4,), bandwidth_mbps=20.0)
    x = policy.features(ctx)
    np.testing.assert_allclose(clone.scores(x, explore=True), policy.scores(x, explore=True))
    assert clone.decide(ctx).arm == policy.decide(ctx).arm


def test_epsilon_greedy_propensities_sum_to_one(profile: BundleProfile) -> None:
    policy = LinUCBPolicy(profile, epsilon=0.2, seed=0)
    ctx = DecisionContext(confidences=(0.4,), bandwidth_mbps=20.0)
    probs = policy.arm_probabilities(ctx)
    assert probs.sum() == pytest.approx(1.0)
    mask = policy.arm_space.mask(0, True)
    assert (probs[~mask] == 0).all()
    d = policy.decide(ctx)
    assert d.propensity == pytest.approx(probs[policy.arm_space.index[d.arm]])


def test_thompson_propensity_is_a_probability(profile: BundleProfile) -> None:
    policy = ThompsonPolicy(profile, seed=0)
    run(policy, 100, seed=5)
    ctx = DecisionContext(confidences=(0.4,), bandwidth_mbps=20.0)
    probs = policy.arm_probabilities(ctx)
    assert probs.sum() == pytest.approx(1.0) and (probs >= 0).all()
    assert 0.0 < policy.decide(ctx).propensity <= 1.0
    clone = policy_from_state(dumps_state(policy))
    assert isinstance(clone, ThompsonPolicy) and clone.v == policy.v


def test_frozen_policy_does_not_learn(profile: BundleProfile) -> None:
    policy = LinUCBPolicy(profile)
    policy.learning = False
    run(policy, 50, seed=1)
    assert policy.counts.sum() == 0


def test_heuristic_hint_is_a_feature_and_survives_a_round_trip(profile: BundleProfile) -> None:
    policy = LinUCBPolicy(profile, hint=True)
    ctx = DecisionContext(confidences=(0.99,), bandwidth_mbps=20.0)
    rows = policy.features(ctx)
    assert rows.shape == (policy.n_arms, policy.featurize.dim + 3)
    hinted = policy.arm_space.arms[int(rows[:, -1].argmax())]
    assert rows[:, -1].sum() == 1.0 and hinted.action is Action.EXIT_LOCAL  # confident: exit
    clone = policy_from_state(dumps_state(policy))
    assert isinstance(clone, LinUCBPolicy) and clone.hint is not None
