"""Policy converters (PolicyService, PolicyUpdate, InferHeader.context): round trips and
rejection of bad fields, without a server."""

from __future__ import annotations

import math

import pytest
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.policy.v1 import policy_pb2
from aiml021.session.v1 import session_pb2
from google.protobuf import duration_pb2

from cloud.grpc._converters import header_from_pb
from cloud.grpc._policy_converters import (
    context_from_proto,
    context_to_proto,
    decision_from_proto,
    decision_to_proto,
    request_context_from_proto,
    snapshot_to_proto,
)
from common.errors import InvalidArgument
from policy import Action, Decision, DecisionContext, PolicySnapshot


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


def _device_context(**kw: object) -> request_pb2.RequestContext:
    base: dict[str, object] = dict(
        rtt=duration_pb2.Duration(nanos=40_000_000),
        bandwidth_bps=8e6,
        edge_load=0.25,
        exit_confidences=[0.5, 0.75],
        entropy=0.5,
        modality=request_pb2.MODALITY_IMAGE,
        device_class="phone",
    )
    base.update(kw)
    return request_pb2.RequestContext(**base)  # type: ignore[arg-type]


def test_the_offload_context_reads_as_a_decision_context() -> None:
    ctx = request_context_from_proto(_device_context())
    assert ctx == DecisionContext(
        exit_index=1,
        confidences=(0.5, 0.75),
        entropy=0.5,
        rtt_ms=40.0,
        bandwidth_mbps=8.0,
        edge_load=0.25,
        device_class="phone",
    )
    with pytest.raises(InvalidArgument, match=r"InferHeader\.context\.edge_load"):
        request_context_from_proto(_device_context(edge_load=1.5))
    with pytest.raises(InvalidArgument, match=r"InferHeader\.context\.exit_confidences"):
        request_context_from_proto(_device_context(exit_confidences=[1.5]))


def _header(**kw: object) -> session_pb2.InferHeader:
    h = session_pb2.InferHeader(request_id="r", total_bytes=4, **kw)  # type: ignore[arg-type]
    h.encoding.dtype = tensor_pb2.DATA_TYPE_FLOAT32
    h.encoding.shape.extend([1])
    h.encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
    return h


def test_a_header_with_context_leaves_time_for_the_answer_to_travel_back() -> None:
    h = _header(context=_device_context())
    h.deadline.FromNanoseconds(2_000_000_000_000_000_000)
    header = header_from_pb(h)
    assert header.context is not None and header.context.rtt_ms == 40.0
    assert header.deadline is not None
    assert header.answer_deadline() == pytest.approx(header.deadline - 0.02)
    bare = header_from_pb(_header())
    assert bare.context is None and bare.answer_deadline() is None


def test_a_snapshot_travels_as_a_policy_update() -> None:
    snap = PolicySnapshot("p", 3, "static", {"exit1": 0.5}, "cut1", "q4|ans", b"{}", 1.5)
    msg = snapshot_to_proto(snap)
    assert (msg.policy_id, msg.policy_version, msg.kind) == ("p", "3", "static")
    assert dict(msg.exit_thresholds) == {"exit1": 0.5} and msg.cut_point == "cut1"
    assert msg.codec.text == "q4|ans" and msg.state == b"{}"
    assert msg.created_at.ToNanoseconds() == 1_500_000_000
