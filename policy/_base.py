"""The one decision interface, the arm catalogue of a bundle and the shared feature vector."""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from common.errors import InvalidArgument
from policy._profile import INPUT_CUT, BundleProfile
from policy._types import Action, Arm, Decision, DecisionContext, Outcome

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class Policy(abc.ABC):
    """Decides per request and exit; may learn from outcomes; serialises its state.

    Used in-process by the edge agent and the gateway, and behind PolicyService.Decide.
    ``state_dict()`` is JSON-serialisable so that it can travel in a PolicyUpdate.
    """

    kind: str = "policy"
    policy_id: str
    version: int = 0

    @abc.abstractmethod
    def decide(self, ctx: DecisionContext) -> Decision:
        """Choose an action for one request at one exit."""

    def update(self, outcome: Outcome) -> None:  # noqa: B027 - optional hook
        """Learn from the outcome of an earlier decision (default: nothing to learn)."""

    def state_dict(self) -> dict[str, Any]:
        """Serialisable state (JSON types only)."""
        return {"kind": self.kind, "policy_id": self.policy_id, "version": self.version}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` produced."""
        self.policy_id = str(state.get("policy_id", self.policy_id))
        self.version = int(state.get("version", self.version))

    def set_thresholds(self, by_exit: Mapping[str, float]) -> None:  # noqa: B027 - optional
        """Replace per-exit confidence thresholds by exit name (what a PolicyUpdate carries);
        policies without thresholds ignore it (see :class:`ThresholdPolicy`)."""


class ThresholdPolicy(Policy):
    """A policy that keeps one calibrated confidence threshold per exit of its profile."""

    profile: BundleProfile
    thresholds: list[float]

    def _init_thresholds(self, profile: BundleProfile, thresholds: Sequence[float] | None) -> None:
        self.profile = profile
        self.thresholds = [float(t) for t in (thresholds or [e.threshold for e in profile.exits])]
        if len(self.thresholds) != profile.n_exits:
            raise InvalidArgument(
                f"{self.kind}: {len(self.thresholds)} thresholds for {profile.n_exits} exits"
            )

    def set_thresholds(self, by_exit: Mapping[str, float]) -> None:
        """Unknown exit names are ignored."""
        self.thresholds = [
            float(by_exit.get(e.name, t))
            for e, t in zip(self.profile.exits, self.thresholds, strict=True)
        ]

    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "thresholds": list(self.thresholds),
            "profile": self.profile.to_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)
        if "thresholds" in state:
            self.thresholds = [float(t) for t in state["thresholds"]]


class ArmSpace:
    """The arms of a bundle: exit, continue, and offload at each cut point with each codec.

    An offload arm is valid at the exit that produces its cut's features (the raw input cut at the
    first exit only) while the link is up; continue is valid before the last exit; defer (answer
    locally now, refine when the link is back) only while the link is down, where an offload
    would otherwise be possible. The cloud answers from the full model, so at the device's last
    exit offloading is still a choice when a cut point sits there (a device that holds only the
    head segments).
    """

    def __init__(self, profile: BundleProfile) -> None:
        self.profile = profile
        arms = [Arm(Action.EXIT_LOCAL), Arm(Action.CONTINUE_LOCAL), Arm(Action.DEFER)]
        for cut in profile.cuts:
            for codec in cut.codecs:
                arms.append(Arm(Action.OFFLOAD, cut.name, codec))
        self.arms: tuple[Arm, ...] = tuple(arms)
        self.index = {arm: i for i, arm in enumerate(self.arms)}
        self._cut_exit = [
            -1 if a.action is not Action.OFFLOAD else profile.cut(a.cut_point).after_exit
            for a in self.arms
        ]
        self._masks: dict[tuple[int, bool], BoolArray] = {}

    def __len__(self) -> int:
        return len(self.arms)

    def mask(self, exit_index: int, link_up: bool) -> BoolArray:
        """Valid arms at ``exit_index`` (cached)."""
        key = (exit_index, link_up)
        cached = self._masks.get(key)
        if cached is not None:
            return cached
        last = self.profile.n_exits - 1
        valid = np.zeros(len(self.arms), dtype=bool)
        for i, arm in enumerate(self.arms):
            if arm.action is Action.EXIT_LOCAL:
                valid[i] = True
            elif arm.action is Action.CONTINUE_LOCAL:
                valid[i] = exit_index < last
            elif arm.action is Action.OFFLOAD and link_up:
                at = self._cut_exit[i]
                valid[i] = at == exit_index or (at == -1 and exit_index == 0)
        can_offload = any(
            at == exit_index or (at == -1 and exit_index == 0) for at in self._cut_exit[3:]
        )
        valid[2] = not link_up and can_offload  # DEFER
        valid.flags.writeable = False
        self._masks[key] = valid
        return valid

    def is_input(self, arm: Arm) -> bool:
        return arm.cut_point == INPUT_CUT


class Featurizer:
    """Maps a context to the feature vector of the linear and neural policies.

    Features: bias, confidence, confidence², normalised entropy, one-hot exit index, RTT and
    1 KB transfer time relative to the deadline, log bandwidth, edge load, elapsed share of the
    deadline, link-down flag, the device's compute share (log2, a quarter core = -0.5) and its
    queue relative to the deadline. Everything is scaled to roughly [0, 1].
    """

    def __init__(self, n_exits: int) -> None:
        self.n_exits = n_exits
        self.dim = 4 + n_exits + 8

    def __call__(self, ctx: DecisionContext) -> FloatArray:
        conf = ctx.confidence
        deadline = max(ctx.deadline_ms, 1e-3)
        bw = ctx.bandwidth_mbps
        up = bw > 0.0
        onehot = [0.0] * self.n_exits
        onehot[min(max(ctx.exit_index, 0), self.n_exits - 1)] = 1.0
        kb_ms = 8.0 / bw if up else deadline
        return np.array(
            [
                1.0,
                conf,
                conf * conf,
                min(ctx.entropy / math.log(10.0), 2.0),
                *onehot,
                min(ctx.rtt_ms / deadline, 2.0),
                min(kb_ms / deadline, 2.0),
                math.log10(bw + 1e-3) / 3.0 if up else -1.0,
                ctx.edge_load,
                min(ctx.elapsed_ms / deadline, 2.0),
                0.0 if up else 1.0,
                max(math.log2(ctx.compute_share), -4.0) / 4.0,
                min(ctx.queue_ms / deadline, 2.0),
            ]
        )


__all__ = ["ArmSpace", "Featurizer", "Policy"]
