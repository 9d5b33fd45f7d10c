"""Routing: what the agent asks the policy after an exit that was not confident enough.

The agent speaks to any object with ``decide(RoutingContext) -> RoutingDecision``. By default it
uses the policy engine's heuristic (``edge_agent._policy_engine``); :class:`ThresholdRouting`, a
small latency-aware rule, is the fallback when the engine is missing or fails.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Sequence
from typing import Protocol

log = logging.getLogger(__name__)


class Action(enum.Enum):
    """What to do with a request after an exit (mirrors ``aiml021.policy.v1.Action``)."""

    EXIT_LOCAL = "exit_local"
    CONTINUE_LOCAL = "continue_local"
    OFFLOAD = "offload"
    DEFER = "defer"


@dataclasses.dataclass(frozen=True)
class CutOption:
    """A cut point the agent could offload at now, with its expected payload size."""

    name: str
    payload_bytes: int
    codec: str


@dataclasses.dataclass(frozen=True)
class RoutingContext:
    """Everything the agent knows when it decides."""

    device_id: str
    model_name: str
    exit_index: int
    exit_confidences: tuple[float, ...]
    entropy: float
    threshold: float | None
    rtt_s: float
    bandwidth_bps: float
    deadline_s: float
    """Time left until the request's deadline."""
    connected: bool
    can_continue: bool
    """True when later local segments (and exits) remain."""
    cuts: Sequence[CutOption]
    edge_load: float = 0.0
    device_class: str = ""
    replay_available: bool = False


@dataclasses.dataclass(frozen=True)
class RoutingDecision:
    """The policy's answer."""

    action: Action
    cut_point: str = ""
    codec: str = ""
    threshold: float = 0.0
    expected_latency_s: float = 0.0
    policy_id: str = "edge-threshold"
    policy_version: str = "1"
    propensity: float = 1.0


class RoutingPolicy(Protocol):
    """Anything that decides for one request."""

    def decide(self, ctx: RoutingContext) -> RoutingDecision:
        """Decide what to do after the exit described by ``ctx``."""
        ...


@dataclasses.dataclass
class ThresholdRouting:
    """Exit when calibrated confidence clears the exit's threshold; otherwise offload at the
    latest computed cut when the predicted offload time fits the deadline, else continue
    locally; offline, defer (local answer now, features queued) when a replay queue exists."""

    cloud_compute_s: float = 0.002
    """Assumed gateway time (queue + tail) for the latency prediction."""
    margin_s: float = 0.005

    def decide(self, ctx: RoutingContext) -> RoutingDecision:
        thr = ctx.threshold if ctx.threshold is not None else 1.0
        conf = ctx.exit_confidences[-1] if ctx.exit_confidences else 0.0
        if ctx.threshold is not None and conf >= ctx.threshold:
            return RoutingDecision(Action.EXIT_LOCAL, threshold=thr)
        if not ctx.connected:
            # Offline: answer locally now and, when a replay queue exists, queue the features
            # this request would have offloaded for refinement later.
            if ctx.replay_available and ctx.cuts:
                return RoutingDecision(Action.DEFER, cut_point=ctx.cuts[-1].name, threshold=thr)
            if ctx.can_continue:
                return RoutingDecision(Action.CONTINUE_LOCAL, threshold=thr)
            return RoutingDecision(Action.EXIT_LOCAL, threshold=thr)
        if ctx.cuts:
            cut = ctx.cuts[-1]
            expected = (
                ctx.rtt_s + cut.payload_bytes * 8.0 / max(ctx.bandwidth_bps, 1.0)
            ) + self.cloud_compute_s
            if expected + self.margin_s <= ctx.deadline_s:
                return RoutingDecision(
                    Action.OFFLOAD,
                    cut_point=cut.name,
                    codec=cut.codec,
                    threshold=thr,
                    expected_latency_s=expected,
                )
        if ctx.can_continue:
            return RoutingDecision(Action.CONTINUE_LOCAL, threshold=thr)
        return RoutingDecision(Action.EXIT_LOCAL, threshold=thr)


__all__ = [
    "Action",
    "CutOption",
    "RoutingContext",
    "RoutingDecision",
    "RoutingPolicy",
    "ThresholdRouting",
]
