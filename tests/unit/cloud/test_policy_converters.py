"""PolicyService converters: round trips and rejection of bad fields, without a server."""

from __future__ import annotations

import math

import pytest
from aiml021.policy.v1 import policy_pb2

from cloud.grpc._policy_converters import (
    context_from_proto,
    context_to_proto,
    decision_from_proto,
    decision_to_proto,
)
from common.errors import InvalidArgument
from policy import Action, Decision, DecisionContext


def good() -> DecisionContext:
    return DecisionContext(
        exit_index=1,
        confidences=(0.5, 0.75),
        entropy=0.25,
        rtt_ms=12.5,
        bandwidth_mbps=20.0,
        edge_load=0.5,
        deadline_ms=80.0,
        device_class="phone",
        device_id="d1",
    )


def test_context_round_trip() -> None:
    ctx = good()
    back = context_from_proto(context_to_proto(ctx))
    assert back.confidences == ctx.confidences and back.exit_index == 1
    assert back.rtt_ms == pytest.approx(12.5) and back.bandwidth_mbps == pytest.approx(20.0)
    assert back.deadline_ms == pytest.approx(80.0) and back.elapsed_ms == 0.0
    assert back.modality == "image" and back.device_id == "d1" and math.isinf(back.cost_budget)


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda m: setattr(m, "exit_index", -1), "exit_index"),
        (lambda m: m.exit_confidences.append(0.9), "exit_confidences"),
        (lambda m: m.exit_confidences.__setitem__(0, 1.5), "exit_confidences"),
        (lambda m: setattr(m, "bandwidth_bps", -1.0), "bandwidth_bps"),
        (lambda m: setattr(m, "edge_load", 2.0), "edge_load"),
        (lambda m: m.ClearField("deadline"), "deadline"),
        (lambda m: setattr(m, "modality", 0), "modality"),
        (lambda m: setattr(m, "cost_budget", -1.0), "cost_budget"),
    ],
)
def test_bad_context_fields_are_named(mutate, field: str) -> None:  # type: ignore[no-untyped-def]
    msg = context_to_proto(good())
    mutate(msg)
    with pytest.raises(InvalidArgument, match=field):
        context_from_proto(msg)


def test_decision_round_trip_and_unspecified_action() -> None:
    d = Decision(Action.OFFLOAD, "cut1", "q4|ans", 12.0, 0.9, "linucb", 4, 0.25)
    msg = decision_to_proto(d, "abc")
    assert msg.decision_id == "abc" and msg.codec.text == "q4|ans" and msg.policy_version == "4"
    assert decision_from_proto(msg) == d
    local = decision_to_proto(Decision(Action.EXIT_LOCAL))
    assert not local.HasField("codec") and not local.HasField("expected_latency")
    with pytest.raises(InvalidArgument, match="ACTION_UNSPECIFIED"):
        decision_from_proto(policy_pb2.Decision())
