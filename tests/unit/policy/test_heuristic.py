"""Threshold logic of the heuristic and the static baseline."""

from __future__ import annotations

import math

import pytest

from common.errors import InvalidArgument
from policy import (
    Action,
    BundleProfile,
    DecisionContext,
    HeuristicPolicy,
    LatencyModel,
    StaticThresholdPolicy,
    dumps_state,
    policy_from_state,
)


def ctx(conf: float, k: int = 0, **kw: float) -> DecisionContext:
    confs = tuple([0.5] * k + [conf])
    return DecisionContext(exit_index=k, confidences=confs, **kw)  # type: ignore[arg-type]


def test_exits_at_and_above_threshold_only(profile: BundleProfile) -> None:
    pol = HeuristicPolicy(profile, thresholds=[0.9, 0.8, 0.0])
    assert pol.decide(ctx(0.9)).action is Action.EXIT_LOCAL
    assert pol.decide(ctx(0.95)).action is Action.EXIT_LOCAL
    below = pol.decide(ctx(0.8999))
    assert below.action is not Action.EXIT_LOCAL
    assert below.threshold == 0.9
    assert pol.decide(ctx(0.81, k=1)).action is Action.EXIT_LOCAL
    assert pol.decide(ctx(0.1, k=2)).action is Action.EXIT_LOCAL  # the final exit always answers


def test_offloads_on_a_fast_link_and_stays_local_on_a_slow_one(profile: BundleProfile) -> None:
    model = LatencyModel(profile, edge_slowdown=100.0)
    pol = HeuristicPolicy(profile, latency_model=model, thresholds=[0.9, 0.9, 0.0])
    fast = pol.decide(
        ctx(0.5, rtt_ms=10.0, bandwidth_mbps=100.0, deadline_ms=100.0, elapsed_ms=13.0)
    )
    assert fast.action is Action.OFFLOAD
    assert math.isfinite(fast.expected_latency_ms) and fast.expected_latency_ms < 100.0
    slow = pol.decide(
        ctx(0.5, rtt_ms=300.0, bandwidth_mbps=0.1, deadline_ms=100.0, elapsed_ms=13.0)
    )
    assert slow.action is Action.CONTINUE_LOCAL


def test_link_down_continues_then_defers(profile: BundleProfile) -> None:
    model = LatencyModel(profile, edge_slowdown=100.0)
    pol = HeuristicPolicy(profile, latency_model=model, thresholds=[0.9, 0.9, 0.0])
    assert pol.decide(ctx(0.5, bandwidth_mbps=0.0)).action is Action.CONTINUE_LOCAL
    # no time left for the next segment: answer locally now and refine later
    late = pol.decide(ctx(0.5, bandwidth_mbps=0.0, deadline_ms=20.0, elapsed_ms=19.0))
    assert late.action is Action.DEFER


def test_wrong_threshold_count_is_rejected(profile: BundleProfile) -> None:
    with pytest.raises(InvalidArgument, match="3 exits"):
        HeuristicPolicy(profile, thresholds=[0.9])
    with pytest.raises(InvalidArgument):
        StaticThresholdPolicy(profile, [0.9], None)


def test_static_continues_to_its_cut_then_offloads(profile: BundleProfile) -> None:
    pol = StaticThresholdPolicy(profile, [0.9, 0.8, 0.0], "cut2", "int8")
    assert pol.decide(ctx(0.5, k=0)).action is Action.CONTINUE_LOCAL
    d = pol.decide(ctx(0.5, k=1))
    assert (d.action, d.cut_point, d.codec) == (Action.OFFLOAD, "cut2", "int8")
    assert pol.decide(ctx(0.85, k=1)).action is Action.EXIT_LOCAL
    # link down at the cut: keep going locally
    assert pol.decide(ctx(0.5, k=1, bandwidth_mbps=0.0)).action is Action.CONTINUE_LOCAL
    edge_only = StaticThresholdPolicy(profile, [0.9, 0.8, 0.0], None)
    assert edge_only.decide(ctx(0.5, k=1)).action is Action.CONTINUE_LOCAL


def test_state_round_trip_keeps_thresholds(profile: BundleProfile) -> None:
    pol = HeuristicPolicy(profile, thresholds=[0.7, 0.6, 0.0])
    pol.version = 3
    back = policy_from_state(dumps_state(pol))
    assert isinstance(back, HeuristicPolicy)
    assert back.thresholds == [0.7, 0.6, 0.0] and back.version == 3
    static = StaticThresholdPolicy(profile, [0.9, 0.8, 0.0], "cut1", "int8")
    again = policy_from_state(dumps_state(static))
    assert again.decide(ctx(0.5)).cut_point == "cut1"


def test_profile_round_trip_and_errors(profile: BundleProfile, tmp_path: object) -> None:
    assert BundleProfile.from_dict(profile.to_dict()) == profile
    with pytest.raises(InvalidArgument, match="malformed"):
        BundleProfile.from_dict({"exits": [{"name": "x"}], "cuts": []})
    with pytest.raises(Exception, match="unknown cut point"):
        profile.cut("nope")
    model = LatencyModel(profile, edge_slowdown=10.0, load_gain=1.0)
    assert model.local_ms(-1, 0) == pytest.approx(1.3)
    assert model.local_ms(-1, 0, edge_load=1.0) == pytest.approx(2.6)
    assert model.transfer_ms(1000, 8.0) == pytest.approx(1.0)
    assert model.transfer_ms(1000, 0.0) == math.inf
