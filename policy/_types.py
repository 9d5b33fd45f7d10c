"""Decision types shared by every policy: the context a policy sees, the decision it returns and
the outcome it learns from. Plain dataclasses; transports convert to and from them."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

from common.errors import InvalidArgument


class Action(enum.Enum):
    """What to do with a request at the current exit."""

    EXIT_LOCAL = "EXIT_LOCAL"
    """Answer with the current exit's prediction."""
    CONTINUE_LOCAL = "CONTINUE_LOCAL"
    """Run the next segment on the device and decide again at the next exit."""
    OFFLOAD = "OFFLOAD"
    """Encode features at the decision's cut point with its codec and send them to the cloud."""
    DEFER = "DEFER"
    """Answer locally now and queue the request for refinement when the link is back."""


@dataclass(frozen=True, slots=True)
class Arm:
    """One choice a learned policy can make: an action plus, for offloads, where and how."""

    action: Action
    cut_point: str = ""
    codec: str = ""

    @property
    def key(self) -> str:
        """Stable text key, e.g. ``OFFLOAD@stage1/int8``."""
        if self.action is Action.OFFLOAD:
            return f"OFFLOAD@{self.cut_point}/{self.codec}"
        return self.action.value


@dataclass(frozen=True, slots=True)
class DecisionContext:
    """Everything a policy may look at for one decision (one request at one exit)."""

    exit_index: int = 0
    """Index of the exit just evaluated (0 = first early exit)."""
    confidences: tuple[float, ...] = ()
    """Calibrated top-1 confidence of every exit evaluated so far, in order."""
    entropy: float = 0.0
    """Predictive entropy (nats) of the current exit's calibrated distribution."""
    rtt_ms: float = 20.0
    """Current round-trip-time estimate to the gateway, milliseconds."""
    bandwidth_mbps: float = 10.0
    """Current uplink bandwidth estimate, Mbit/s; 0 means the link is down."""
    edge_load: float = 0.0
    """Device load in [0, 1]; local compute slows down as it rises."""
    deadline_ms: float = 100.0
    """Latency budget (SLA) for the whole request, milliseconds from its arrival."""
    elapsed_ms: float = 0.0
    """Time already spent on this request, milliseconds."""
    modality: str = "image"
    cost_budget: float = math.inf
    """Cloud cost the request may spend, in the objective's cost units (inf: no limit; 0: none)."""
    device_class: str = "default"
    device_id: str = ""
    request_id: str = ""
    cut_points: tuple[str, ...] | None = None
    """Cut points the device may offload at now (features computed, cut allowed); None: every
    cut point of the profile."""
    replay_available: bool = False
    """The device keeps a replay queue: deferring (answer now, refine later) is possible."""
    compute_share: float = 1.0
    """Share of the profiling core the device's compute gets (its class's CPU quota: 1 for a
    phone core, 0.25 for a quarter-core IoT device); local compute takes profiled time / share.
    Device-local: PolicyService's DecisionContext message does not carry it (1 there)."""
    queue_ms: float = 0.0
    """Device compute already queued ahead of this request, milliseconds: its local work starts
    after that, while an offload of the raw input need not wait. Device-local, like
    ``compute_share``."""

    @property
    def confidence(self) -> float:
        """Confidence of the current exit (0 before any exit ran)."""
        return self.confidences[-1] if self.confidences else 0.0

    @property
    def link_up(self) -> bool:
        return self.bandwidth_mbps > 0.0

    @property
    def remaining_ms(self) -> float:
        """Time left until the deadline, milliseconds."""
        return self.deadline_ms - self.elapsed_ms

    def __post_init__(self) -> None:
        if not self.compute_share > 0.0:
            raise InvalidArgument(
                f"DecisionContext.compute_share must be > 0, got {self.compute_share}"
            )
        if not self.queue_ms >= 0.0:
            raise InvalidArgument(f"DecisionContext.queue_ms must be >= 0, got {self.queue_ms}")

    def may_offload_at(self, cut_point: str) -> bool:
        """Whether the device may offload at ``cut_point`` now."""
        return self.cut_points is None or cut_point in self.cut_points


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer. ``propensity`` is the probability with which the policy picked this
    action in this context (1.0 for deterministic choices); off-policy evaluation needs it."""

    action: Action
    cut_point: str = ""
    codec: str = ""
    expected_latency_ms: float = math.nan
    """Predicted end-to-end latency of the request under this decision, milliseconds."""
    threshold: float = math.nan
    policy_id: str = ""
    policy_version: int = 0
    propensity: float = 1.0

    @property
    def arm(self) -> Arm:
        if self.action is Action.OFFLOAD:
            return Arm(self.action, self.cut_point, self.codec)
        return Arm(self.action)


@dataclass(slots=True)
class Outcome:
    """What happened after a decision, fed back with :meth:`Policy.update`.

    ``reward`` is the step reward of this decision (for a terminal decision, everything that
    happened after it; for CONTINUE_LOCAL, the cost of the extra local segment, with
    ``next_context`` naming the state reached). ``return_to_go`` is the sum of rewards from this
    decision to the end of the request: bandits learn from it, the DQN bootstraps from ``reward``.
    """

    context: DecisionContext
    decision: Decision
    reward: float
    return_to_go: float = math.nan
    terminal: bool = True
    next_context: DecisionContext | None = None
    correct: bool | None = None
    latency_ms: float = math.nan
    cloud_cost: float = 0.0
    bytes_sent: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if math.isnan(self.return_to_go):
            self.return_to_go = self.reward


__all__ = ["Action", "Arm", "Decision", "DecisionContext", "Outcome"]
