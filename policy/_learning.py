"""Learning from remote outcomes: decisions are remembered by id in a bounded table and a reported
outcome becomes a reward of the combined objective for :meth:`Policy.update`.

Transports (PolicyService in ``cloud.grpc``) only convert; this module is what they call.
"""

from __future__ import annotations

import collections
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from policy._base import Policy
from policy._objective import ObjectiveWeights
from policy._types import Decision, DecisionContext, Outcome

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReportedOutcome:
    """What a caller reports after acting on the decision ``decision_id``."""

    decision_id: str
    correct: bool
    latency_ms: float
    """End-to-end latency of the request, milliseconds."""
    cloud_cost: float = 0.0
    bytes_sent: int = 0


OutcomeObserver = Callable[[DecisionContext, Decision, Policy, "ReportedOutcome"], None]
"""Hears of every reported outcome with the context, the decision and the policy that made it
(an A/B experiment's per-arm results, :mod:`policy._admin`)."""


class OnlineLearner:
    """One policy decided for remote callers. Each decision gets an id; recent decisions
    (``max_pending``, oldest forgotten first) wait for their outcome, and each learns once.

    ``route`` (optional) picks the policy for a context — the device class's, or the device's
    experiment arm's (``PolicyPublisher.policy``); ``policy`` decides when it gives None. The
    outcome teaches the policy that made the decision."""

    def __init__(
        self,
        policy: Policy,
        *,
        weights: ObjectiveWeights | None = None,
        max_pending: int = 100_000,
        route: Callable[[DecisionContext], Policy | None] | None = None,
    ) -> None:
        self.policy = policy
        self.weights = weights or ObjectiveWeights()
        self.max_pending = max_pending
        self.route = route
        self.observers: list[OutcomeObserver] = []
        """Called after each accepted outcome (exceptions are logged, never raised)."""
        self._pending: collections.OrderedDict[str, tuple[DecisionContext, Decision, Policy]] = (
            collections.OrderedDict()
        )

    @property
    def pending(self) -> int:
        """Decisions still waiting for an outcome."""
        return len(self._pending)

    def decide(self, ctx: DecisionContext) -> tuple[str, Decision]:
        """The policy's decision for ``ctx`` and the id to report its outcome against."""
        policy = (self.route(ctx) if self.route is not None else None) or self.policy
        decision = policy.decide(ctx)
        decision_id = uuid.uuid4().hex
        self._pending[decision_id] = (ctx, decision, policy)
        if len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)
        return decision_id, decision

    def reward(self, ctx: DecisionContext, reported: ReportedOutcome) -> float:
        """The reward of ``reported``: the negative combined cost of the request."""
        cost = self.weights.request_cost(
            float(reported.correct),
            reported.latency_ms,
            ctx.deadline_ms,
            reported.cloud_cost,
            float(reported.bytes_sent),
        )
        return -float(cost)

    def report(self, reported: ReportedOutcome) -> bool:
        """Learn from ``reported``; False when its decision is unknown, expired or already
        learned from."""
        found = self._pending.pop(reported.decision_id, None)
        if found is None:
            return False
        ctx, decision, policy = found
        policy.update(
            Outcome(
                context=ctx,
                decision=decision,
                reward=self.reward(ctx, reported),
                correct=reported.correct,
                latency_ms=reported.latency_ms,
                cloud_cost=reported.cloud_cost,
                bytes_sent=reported.bytes_sent,
            )
        )
        for observe in list(self.observers):
            try:
                observe(ctx, decision, policy, reported)
            except Exception:  # an observer's fault must not lose the outcome
                log.exception("outcome observer failed")
        return True


__all__ = ["OnlineLearner", "OutcomeObserver", "ReportedOutcome"]
