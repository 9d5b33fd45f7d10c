"""The device's policy guard: a policy fault or an offload the device cannot carry out falls back
to the fallback rule; everything else passes through."""

from __future__ import annotations

from typing import Any

from edge_agent import guarded_decide
from policy import (
    Action,
    BundleProfile,
    CodecCost,
    CutPointCost,
    Decision,
    DecisionContext,
    ExitCost,
    FallbackPolicy,
    Policy,
)

PROFILE = BundleProfile(
    model="m",
    exits=(ExitCost("exit1", 1.0, threshold=0.9), ExitCost("final", 1.0, threshold=0.0)),
    cuts=(CutPointCost("cut1", 0, 1.0, {"raw": CodecCost(25088)}),),
)


def _ctx(**kw: Any) -> DecisionContext:
    base: dict[str, Any] = dict(
        exit_index=0,
        confidences=(0.5,),
        bandwidth_mbps=10.0,
        deadline_ms=200.0,
        cut_points=("cut1",),
    )
    base.update(kw)
    return DecisionContext(**base)


class _Fixed(Policy):
    kind = "fixed"
    policy_id = "fixed"

    def __init__(self, decision: Decision | None) -> None:
        self.decision = decision

    def decide(self, ctx: DecisionContext) -> Decision:
        if self.decision is None:
            raise RuntimeError("broken policy")
        return self.decision


def test_guard_falls_back_on_faults_and_impossible_offloads() -> None:
    fallback = FallbackPolicy(PROFILE, policy_id="fb")
    here = Decision(Action.OFFLOAD, "cut1", "raw", policy_id="fixed")
    assert guarded_decide(_Fixed(here), fallback, _ctx()) is here
    assert guarded_decide(_Fixed(None), fallback, _ctx()).policy_id == "fb"
    elsewhere = Decision(Action.OFFLOAD, "cut2", "raw", policy_id="fixed")
    assert guarded_decide(_Fixed(elsewhere), fallback, _ctx()).policy_id == "fb"
    assert guarded_decide(_Fixed(here), fallback, _ctx(bandwidth_mbps=0.0)).policy_id == "fb"
    stay = Decision(Action.CONTINUE_LOCAL, policy_id="fixed")
    assert guarded_decide(_Fixed(stay), fallback, _ctx(bandwidth_mbps=0.0)) is stay
