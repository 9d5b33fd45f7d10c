"""Rule-based policies: the calibrated-threshold heuristic with a latency model and adaptive cut
point, the static threshold + fixed cut baseline, and an epsilon-greedy wrapper that turns any
policy into a logging policy with known propensities."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from policy._base import ArmSpace, FloatArray, Policy, ThresholdPolicy
from policy._cut import AdaptiveCutSelector
from policy._objective import ObjectiveWeights
from policy._profile import INPUT_CUT, BundleProfile, LatencyModel, expected_latency_ms
from policy._types import Action, Arm, Decision, DecisionContext


class HeuristicPolicy(ThresholdPolicy):
    """Exit when the calibrated confidence clears the exit's threshold; otherwise follow the cut
    point the :class:`AdaptiveCutSelector` picks for the network estimate, offloading when the
    predicted latency fits the deadline and continuing locally when it does not.

    The device's compute share and queue (``DecisionContext.compute_share``, ``queue_ms``) scale
    and delay its local compute in every prediction. With objective ``weights`` the selector
    picks the cut by predicted objective rather than by latency (see :mod:`policy._cut`)."""

    kind = "heuristic"

    def __init__(
        self,
        profile: BundleProfile,
        *,
        thresholds: Sequence[float] | None = None,
        latency_model: LatencyModel | None = None,
        accuracy_budget: float = 0.5,
        hysteresis: float = 0.15,
        weights: ObjectiveWeights | None = None,
        policy_id: str = "heuristic",
    ) -> None:
        self._init_thresholds(profile, thresholds)
        self.model = latency_model or LatencyModel(profile)
        self.selector = AdaptiveCutSelector(
            self.model, accuracy_budget=accuracy_budget, hysteresis=hysteresis, weights=weights
        )
        self.policy_id = policy_id
        self._last = profile.n_exits - 1
        self._can_offload = [
            any(c.after_exit == k or (c.name == INPUT_CUT and k == 0) for c in profile.cuts)
            for k in range(profile.n_exits)
        ]

    def _decision(self, ctx: DecisionContext, arm: Arm, threshold: float) -> Decision:
        return Decision(
            action=arm.action,
            cut_point=arm.cut_point,
            codec=arm.codec,
            expected_latency_ms=expected_latency_ms(self.model, ctx, arm),
            threshold=threshold,
            policy_id=self.policy_id,
            policy_version=self.version,
        )

    def _offload_here(self, ctx: DecisionContext) -> tuple[Arm, float] | None:
        """Fastest offload option whose features exist at this exit."""
        best: tuple[Arm, float] | None = None
        k = ctx.exit_index
        for cut in self.profile.cuts:
            if not (cut.after_exit == k or (cut.name == INPUT_CUT and k == 0)):
                continue
            if not ctx.may_offload_at(cut.name):
                continue
            for codec, cost in cut.codecs.items():
                if cost.accuracy_drop > self.selector.accuracy_budget:
                    continue
                ms = self.model.offload_ms(
                    cut.name, codec, ctx.rtt_ms, ctx.bandwidth_mbps, ctx.edge_load,
                    ctx.compute_share,
                )  # fmt: skip
                if best is None or ms < best[1]:
                    best = (Arm(Action.OFFLOAD, cut.name, codec), ms)
        return best

    def _priced(self, ctx: DecisionContext, here: tuple[Arm, float], next_ms: float) -> Arm:
        """By objective: the offload here against answering now, the request's error taken
        as 1 - confidence here and as the codec's accuracy drop after the offload; continuing
        when there is a next exit and the offload costs more than answering."""
        w = self.selector.weights
        assert w is not None
        arm, ms = here
        cut = self.profile.cut(arm.cut_point)
        cost = cut.codecs[arm.codec]
        off = w.request_cost(
            1.0 - cost.accuracy_drop / 100.0, ctx.elapsed_ms + ms, ctx.deadline_ms,
            w.cloud_cost(cut.tail_ms, 1.0), float(cost.bytes),
        )  # fmt: skip
        now = w.request_cost(ctx.confidence, ctx.elapsed_ms, ctx.deadline_ms, 0.0, 0.0)
        if off <= now:
            return arm
        return Arm(Action.CONTINUE_LOCAL) if math.isfinite(next_ms) else Arm(Action.EXIT_LOCAL)

    def decide(self, ctx: DecisionContext) -> Decision:
        k = min(ctx.exit_index, self._last)
        thr = self.thresholds[k]
        if ctx.confidence >= thr or (k == self._last and not self._can_offload[k]):
            return self._decision(ctx, Arm(Action.EXIT_LOCAL), thr)
        remaining = ctx.deadline_ms - ctx.elapsed_ms
        next_ms = (
            ctx.queue_ms + self.model.local_ms(k, k + 1, ctx.edge_load, ctx.compute_share)
            if k < self._last
            else math.inf
        )
        if not ctx.link_up or ctx.cost_budget <= 0.0:
            if next_ms <= remaining:
                return self._decision(ctx, Arm(Action.CONTINUE_LOCAL), thr)
            action = Action.DEFER if not ctx.link_up else Action.EXIT_LOCAL
            return self._decision(ctx, Arm(action), thr)
        plan = self.selector.select(
            ctx.rtt_ms, ctx.bandwidth_mbps, ctx.edge_load, share=ctx.compute_share,
            queue_ms=ctx.queue_ms, deadline_ms=ctx.deadline_ms,
        )  # fmt: skip
        # by objective, a breach is already priced in: follow the plan past the deadline too
        priced = self.selector.weights is not None
        if plan is not None and plan.after_exit > k and (priced or next_ms <= remaining):
            return self._decision(ctx, Arm(Action.CONTINUE_LOCAL), thr)
        at_k = plan is not None and (plan.after_exit == k or (plan.after_exit == -1 and k == 0))
        if priced and plan is not None and at_k and ctx.may_offload_at(plan.cut_point):
            return self._decision(ctx, Arm(Action.OFFLOAD, plan.cut_point, plan.codec), thr)
        here = self._offload_here(ctx)
        if priced and here is not None:
            return self._decision(ctx, self._priced(ctx, here, next_ms), thr)
        if here is not None and here[1] <= remaining:
            return self._decision(ctx, here[0], thr)
        if next_ms <= remaining:
            return self._decision(ctx, Arm(Action.CONTINUE_LOCAL), thr)
        return self._decision(ctx, Arm(Action.EXIT_LOCAL), thr)


class StaticThresholdPolicy(ThresholdPolicy):
    """Baseline: fixed thresholds per exit and one fixed cut point and codec (or none: never
    offload). Below threshold it continues up to the cut's exit and offloads there."""

    kind = "static"

    def __init__(
        self,
        profile: BundleProfile,
        thresholds: Sequence[float],
        cut_point: str | None,
        codec: str | None = None,
        *,
        policy_id: str = "static",
    ) -> None:
        self._init_thresholds(profile, thresholds)
        self.cut_point = cut_point
        self.codec = codec
        self.offload_at = -1
        if cut_point is not None:
            cut = profile.cut(cut_point)
            self.codec = codec or next(iter(cut.codecs))
            self.offload_at = max(cut.after_exit, 0)
        self.policy_id = policy_id
        self._last = profile.n_exits - 1

    def decide(self, ctx: DecisionContext) -> Decision:
        k = min(ctx.exit_index, self._last)
        thr = self.thresholds[k]
        if ctx.confidence >= thr:
            action = Action.EXIT_LOCAL
        elif self.cut_point is not None and k == self.offload_at and ctx.link_up:
            return Decision(
                Action.OFFLOAD, self.cut_point, self.codec or "", threshold=thr,
                policy_id=self.policy_id, policy_version=self.version,
            )  # fmt: skip
        elif k < self._last:
            action = Action.CONTINUE_LOCAL
        else:
            action = Action.EXIT_LOCAL
        return Decision(
            action, threshold=thr, policy_id=self.policy_id, policy_version=self.version
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "cut_point": self.cut_point, "codec": self.codec}


class EpsilonGreedy(Policy):
    """Wraps a policy: with probability ``epsilon`` it picks a uniformly random valid arm, so
    every decision carries an exact propensity (a logging policy for off-policy evaluation)."""

    kind = "epsilon-greedy"

    def __init__(self, base: Policy, profile: BundleProfile, epsilon: float, seed: int = 0) -> None:
        self.base = base
        self.arm_space = ArmSpace(profile)
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.policy_id = f"{base.policy_id}+eps{epsilon:g}"

    def arm_probabilities(self, ctx: DecisionContext) -> FloatArray:
        mask = self.arm_space.mask(ctx.exit_index, ctx.link_up)
        probs = self.epsilon * mask / mask.sum()
        probs[self.arm_space.index[self.base.decide(ctx).arm]] += 1.0 - self.epsilon
        return probs

    def decide(self, ctx: DecisionContext) -> Decision:
        base = self.base.decide(ctx)
        mask = self.arm_space.mask(ctx.exit_index, ctx.link_up)
        greedy = self.arm_space.index[base.arm]
        chosen = greedy
        if self.rng.random() < self.epsilon:
            chosen = int(self.rng.choice(np.flatnonzero(mask)))
        p = (1.0 - self.epsilon) * (chosen == greedy) + self.epsilon / int(mask.sum())
        arm = self.arm_space.arms[chosen]
        return Decision(
            arm.action, arm.cut_point, arm.codec, base.expected_latency_ms, base.threshold,
            self.policy_id, self.version, p,
        )  # fmt: skip


def arm_probabilities(policy: Policy, arm_space: ArmSpace, ctx: DecisionContext) -> FloatArray:
    """Distribution of ``policy`` over the arms in ``ctx`` (one-hot for deterministic policies)."""
    fn = getattr(policy, "arm_probabilities", None)
    if fn is not None:
        return fn(ctx)
    probs = np.zeros(len(arm_space))
    probs[arm_space.index[policy.decide(ctx).arm]] = 1.0
    return probs


__all__ = ["EpsilonGreedy", "HeuristicPolicy", "StaticThresholdPolicy", "arm_probabilities"]
