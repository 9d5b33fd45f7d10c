"""FallbackPolicy: the edge agent's rule when its policy fails or answers the impossible."""

from __future__ import annotations

from typing import Any

import pytest

from policy import (
    Action,
    BundleProfile,
    CodecCost,
    CutPointCost,
    DecisionContext,
    ExitCost,
    FallbackPolicy,
)


@pytest.fixture
def profile() -> BundleProfile:
    return BundleProfile(
        model="m",
        exits=(ExitCost("exit1", 1.0, threshold=0.9), ExitCost("final", 1.0, threshold=0.0)),
        cuts=(CutPointCost("cut1", 0, 1.0, {"raw": CodecCost(25088)}),),
    )


def _ctx(**kw: Any) -> DecisionContext:
    base: dict[str, Any] = dict(
        exit_index=0,
        confidences=(0.5,),
        entropy=1.0,
        rtt_ms=10.0,
        bandwidth_mbps=10.0,
        deadline_ms=200.0,
        cut_points=("cut1",),
    )
    base.update(kw)
    return DecisionContext(**base)


def test_fallback_rule_decisions(profile: BundleProfile) -> None:
    r = FallbackPolicy(profile)
    assert r.decide(_ctx(confidences=(0.95,))).action is Action.EXIT_LOCAL
    off = r.decide(_ctx())
    assert off.action is Action.OFFLOAD and off.cut_point == "cut1" and off.codec == ""
    assert off.threshold == 0.9 and 10.0 < off.expected_latency_ms < 200.0
    # 25 kB at 100 kbit/s takes 2 s: does not fit a 200 ms deadline -> continue locally.
    assert r.decide(_ctx(bandwidth_mbps=0.1)).action is Action.CONTINUE_LOCAL
    # Time already spent counts: 195 of 200 ms gone leaves no room for the offload.
    assert r.decide(_ctx(elapsed_ms=195.0)).action is Action.CONTINUE_LOCAL
    last = _ctx(exit_index=1, confidences=(0.5, 0.0), bandwidth_mbps=0.1)
    assert FallbackPolicy(profile, thresholds=[0.9, 0.5]).decide(last).action is Action.EXIT_LOCAL
    assert r.decide(_ctx(bandwidth_mbps=0.0)).action is Action.CONTINUE_LOCAL
    deferred = r.decide(_ctx(bandwidth_mbps=0.0, replay_available=True))
    assert deferred.action is Action.DEFER and deferred.cut_point == "cut1"
    assert r.decide(_ctx(cut_points=())).action is Action.CONTINUE_LOCAL  # no cut allowed


def test_thresholds_are_replaced_by_exit_name(profile: BundleProfile) -> None:
    r = FallbackPolicy(profile)
    r.set_thresholds({"exit1": 0.4, "unknown": 0.1})
    assert r.thresholds == [0.4, 0.0]
    assert r.decide(_ctx()).action is Action.EXIT_LOCAL
    assert r.state_dict()["thresholds"] == [0.4, 0.0]
