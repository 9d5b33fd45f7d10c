"""Base of the policies that learn a score per arm, with epsilon-greedy exploration and the
propensity of every choice (off-policy evaluation needs it)."""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from policy._base import ArmSpace, Featurizer, FloatArray, Policy
from policy._heuristic import HeuristicPolicy
from policy._profile import BundleProfile, LatencyModel, expected_latency_ms
from policy._types import Action, Decision, DecisionContext, Outcome


class ArmLatency:
    """Predicted latency of every arm in one vectorised step (a model-based feature: the learned
    policies correct the latency model rather than rediscovering it)."""

    def __init__(self, space: ArmSpace, model: LatencyModel) -> None:
        self.model = model
        n = len(space)
        self.is_offload = np.array([a.action is Action.OFFLOAD for a in space.arms])
        self.is_continue = np.array([a.action is Action.CONTINUE_LOCAL for a in space.arms])
        self.n_bytes = np.zeros(n)
        self.encode = np.zeros(n)
        self.fixed = np.zeros(n)
        for i, arm in enumerate(space.arms):
            if arm.action is Action.OFFLOAD:
                cut = model.profile.cut(arm.cut_point)
                cost = cut.codecs[arm.codec]
                self.n_bytes[i] = cost.bytes
                self.encode[i] = cost.encode_ms
                self.fixed[i] = model.cloud_queue_ms + cost.decode_ms + cut.tail_ms
        self.rtt_mask = self.is_offload.astype(np.float64)
        seg = [e.segment_ms for e in model.profile.exits]
        self.rest = [sum(seg[k + 1 :]) for k in range(len(seg))]

    def __call__(self, ctx: DecisionContext) -> FloatArray:
        factor = self.model.edge_factor(ctx.edge_load, ctx.compute_share)
        bw = ctx.bandwidth_mbps
        if bw > 0.0:
            # encode, fixed and bytes are 0 on non-offload arms; the RTT counts on offloads only
            pred = self.encode * factor + self.n_bytes * (8.0 / (bw * 1000.0)) + self.fixed
            pred += self.rtt_mask * ctx.rtt_ms
        else:
            pred = self.rtt_mask * (2.0 * ctx.deadline_ms)
        k = min(ctx.exit_index, len(self.rest) - 1)
        pred += self.is_continue * (self.rest[k] * factor + ctx.queue_ms) + ctx.elapsed_ms
        return pred


class LearnedPolicy(Policy):
    """Scores arms from the shared feature vector; subclasses define the scores and learning."""

    kind = "learned"

    def __init__(
        self,
        profile: BundleProfile,
        *,
        epsilon: float = 0.0,
        seed: int = 0,
        policy_id: str | None = None,
        latency_model: LatencyModel | None = None,
        hint: bool = False,
    ) -> None:
        self.profile = profile
        self.arm_space = ArmSpace(profile)
        self.featurize = Featurizer(profile.n_exits)
        self.latency_model = latency_model or LatencyModel(profile)
        self.arm_latency = ArmLatency(self.arm_space, self.latency_model)
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.policy_id = policy_id or self.kind
        self.learning = True
        """When False, :meth:`update` is ignored (a frozen policy for evaluation)."""
        self.hint: Policy | None = None
        """With ``hint=True``, a stateless heuristic whose choice is one more feature per arm:
        the learner then only has to learn where to deviate from the latency model's rule."""
        if hint:
            self.hint = HeuristicPolicy(profile, latency_model=self.latency_model, hysteresis=0.0)

    @property
    def n_arms(self) -> int:
        return len(self.arm_space)

    def features(self, ctx: DecisionContext) -> FloatArray:
        """What :meth:`scores` and :meth:`learn` consume; by default one row per arm: the shared
        features plus the arm's predicted latency and breach flag relative to the deadline."""
        x = self.featurize(ctx)
        deadline = max(ctx.deadline_ms, 1e-3)
        lat = np.minimum(self.arm_latency(ctx) / deadline, 3.0)
        d = x.shape[0]
        rows = np.zeros((self.n_arms, self.feature_dim))
        rows[:, :d] = x
        rows[:, d] = lat
        rows[:, d + 1] = lat > 1.0
        if self.hint is not None:
            rows[self.arm_space.index[self.hint.decide(ctx).arm], d + 2] = 1.0
        return rows

    @property
    def feature_dim(self) -> int:
        """Columns of one arm's row."""
        return self.featurize.dim + 2 + (self.hint is not None)

    @abc.abstractmethod
    def scores(self, x: FloatArray, *, explore: bool) -> FloatArray:
        """Score of every arm for features ``x`` (higher is better)."""

    @abc.abstractmethod
    def learn(self, x: FloatArray, arm: int, outcome: Outcome) -> None:
        """One learning step from the outcome of arm ``arm`` in context ``x``."""

    def greedy_probabilities(self, x: FloatArray, mask: np.ndarray) -> FloatArray:
        """Probability of each arm before epsilon mixing (one-hot for deterministic scores)."""
        probs = np.zeros(self.n_arms)
        probs[int(np.argmax(np.where(mask, self.scores(x, explore=True), -np.inf)))] = 1.0
        return probs

    def arm_probabilities(self, ctx: DecisionContext) -> FloatArray:
        """The policy's distribution over :attr:`arm_space` arms in ``ctx``."""
        mask = self.arm_space.mask(ctx.exit_index, ctx.link_up)
        probs = self.greedy_probabilities(self.features(ctx), mask)
        if self.epsilon > 0.0:
            probs = (1.0 - self.epsilon) * probs + self.epsilon * mask / mask.sum()
        return probs

    def _propensity(self, x: FloatArray, mask: np.ndarray, chosen: int, greedy: int) -> float:
        n_valid = int(mask.sum())
        return (1.0 - self.epsilon) * (chosen == greedy) + self.epsilon / n_valid

    def decide(self, ctx: DecisionContext) -> Decision:
        x = self.features(ctx)
        mask = self.arm_space.mask(ctx.exit_index, ctx.link_up)
        greedy = int(np.argmax(np.where(mask, self.scores(x, explore=True), -np.inf)))
        chosen = greedy
        if self.epsilon > 0.0 and self.rng.random() < self.epsilon:
            chosen = int(self.rng.choice(np.flatnonzero(mask)))
        arm = self.arm_space.arms[chosen]
        return Decision(
            action=arm.action,
            cut_point=arm.cut_point,
            codec=arm.codec,
            expected_latency_ms=expected_latency_ms(self.latency_model, ctx, arm),
            threshold=self.profile.exits[min(ctx.exit_index, self.profile.n_exits - 1)].threshold,
            policy_id=self.policy_id,
            policy_version=self.version,
            propensity=self._propensity(x, mask, chosen, greedy),
        )

    def update(self, outcome: Outcome) -> None:
        if not self.learning:
            return
        arm = self.arm_space.index.get(outcome.decision.arm)
        if arm is None:  # e.g. DEFER chosen by a fallback rule: nothing to learn for an arm
            return
        self.learn(self.features(outcome.context), arm, outcome)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            epsilon=self.epsilon, profile=self.profile.to_dict(), hint=self.hint is not None
        )
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        self.epsilon = float(state.get("epsilon", self.epsilon))


__all__ = ["LearnedPolicy", "expected_latency_ms"]
