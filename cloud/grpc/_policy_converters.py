"""Proto <-> policy conversions (PolicyService and the PolicyUpdate pushed on session streams).
Incoming messages are validated and rejected with INVALID_ARGUMENT naming the field."""

from __future__ import annotations

import math

from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.policy.v1 import policy_pb2

from common.errors import InvalidArgument
from common.prototime import duration_from_ms, duration_to_ms, timestamp_from_s
from policy import Action, Decision, DecisionContext, PolicySnapshot, ReportedOutcome

_ACTION_TO_PB = {
    Action.EXIT_LOCAL: policy_pb2.ACTION_EXIT_LOCAL,
    Action.CONTINUE_LOCAL: policy_pb2.ACTION_CONTINUE_LOCAL,
    Action.OFFLOAD: policy_pb2.ACTION_OFFLOAD,
    Action.DEFER: policy_pb2.ACTION_DEFER,
}
_ACTION_FROM_PB = {v: k for k, v in _ACTION_TO_PB.items()}
_MODALITY = {
    request_pb2.MODALITY_IMAGE: "image",
    request_pb2.MODALITY_AUDIO: "audio",
    request_pb2.MODALITY_TEXT: "text",
    request_pb2.MODALITY_SENSOR: "sensor",
}
_MODALITY_TO_PB = {v: k for k, v in _MODALITY.items()}


def context_from_proto(msg: policy_pb2.DecisionContext) -> DecisionContext:
    """Validate and convert. ``deadline`` is the time left, so ``elapsed_ms`` is 0; a
    ``cost_budget`` of 0 (unset in proto3) means no limit."""
    if msg.exit_index < 0:
        raise InvalidArgument(f"context.exit_index: must be >= 0, got {msg.exit_index}")
    confs = tuple(float(c) for c in msg.exit_confidences)
    if len(confs) != msg.exit_index + 1:
        raise InvalidArgument(
            f"context.exit_confidences: expected {msg.exit_index + 1} values (one per exit up to "
            f"exit_index {msg.exit_index}), got {len(confs)}"
        )
    if any(not 0.0 <= c <= 1.0 for c in confs):
        raise InvalidArgument("context.exit_confidences: every confidence must lie in [0, 1]")
    if not math.isfinite(msg.bandwidth_bps) or msg.bandwidth_bps < 0:
        raise InvalidArgument("context.bandwidth_bps: must be finite and >= 0 (0: link down)")
    if not 0.0 <= msg.edge_load <= 1.0:
        raise InvalidArgument(f"context.edge_load: must lie in [0, 1], got {msg.edge_load}")
    if not msg.HasField("deadline") or duration_to_ms(msg.deadline) <= 0:
        raise InvalidArgument("context.deadline: required, the time left must be positive")
    if msg.modality not in _MODALITY:
        raise InvalidArgument("context.modality: MODALITY_UNSPECIFIED or unknown value")
    if msg.cost_budget < 0 or not math.isfinite(msg.cost_budget):
        raise InvalidArgument("context.cost_budget: must be finite and >= 0 (0: no limit)")
    rtt = duration_to_ms(msg.rtt)
    if rtt < 0:
        raise InvalidArgument("context.rtt: must not be negative")
    return DecisionContext(
        exit_index=msg.exit_index,
        confidences=confs,
        entropy=float(msg.entropy),
        rtt_ms=rtt,
        bandwidth_mbps=msg.bandwidth_bps / 1e6,
        edge_load=float(msg.edge_load),
        deadline_ms=duration_to_ms(msg.deadline),
        elapsed_ms=0.0,
        modality=_MODALITY[msg.modality],
        cost_budget=msg.cost_budget if msg.cost_budget > 0 else math.inf,
        device_class=msg.device_class,
        device_id=msg.device_id,
    )


def request_context_from_proto(msg: request_pb2.RequestContext) -> DecisionContext:
    """What a device knew when it offloaded (``InferHeader.context``) as a decision context:
    the exit index is that of its last confidence; the deadline travels in the header itself.
    Values outside their ranges are rejected naming ``InferHeader.context.<field>``."""
    confs = tuple(float(c) for c in msg.exit_confidences)
    where = "InferHeader.context"
    if any(not 0.0 <= c <= 1.0 for c in confs):
        raise InvalidArgument(f"{where}.exit_confidences: every confidence must lie in [0, 1]")
    if not math.isfinite(msg.bandwidth_bps) or msg.bandwidth_bps < 0:
        raise InvalidArgument(f"{where}.bandwidth_bps: must be finite and >= 0 (0: link down)")
    if not 0.0 <= msg.edge_load <= 1.0:
        raise InvalidArgument(f"{where}.edge_load: must lie in [0, 1], got {msg.edge_load}")
    rtt = duration_to_ms(msg.rtt)
    if rtt < 0:
        raise InvalidArgument(f"{where}.rtt: must not be negative")
    return DecisionContext(
        exit_index=max(len(confs) - 1, 0),
        confidences=confs,
        entropy=float(msg.entropy),
        rtt_ms=rtt,
        bandwidth_mbps=msg.bandwidth_bps / 1e6,
        edge_load=float(msg.edge_load),
        modality=_MODALITY.get(msg.modality, "image"),
        device_class=msg.device_class,
    )


def context_to_proto(ctx: DecisionContext, model_name: str = "") -> policy_pb2.DecisionContext:
    """The proto form of ``ctx`` (deadline sent as the time left)."""
    return policy_pb2.DecisionContext(
        device_id=ctx.device_id,
        model_name=model_name,
        exit_index=ctx.exit_index,
        exit_confidences=list(ctx.confidences),
        entropy=ctx.entropy,
        rtt=duration_from_ms(ctx.rtt_ms),
        bandwidth_bps=ctx.bandwidth_mbps * 1e6,
        edge_load=ctx.edge_load,
        deadline=duration_from_ms(max(ctx.deadline_ms - ctx.elapsed_ms, 0.0)),
        modality=_MODALITY_TO_PB.get(ctx.modality, request_pb2.MODALITY_UNSPECIFIED),
        cost_budget=0.0 if math.isinf(ctx.cost_budget) else ctx.cost_budget,
        device_class=ctx.device_class,
    )


def decision_to_proto(decision: Decision, decision_id: str = "") -> policy_pb2.Decision:
    """The proto form of ``decision``; the codec travels as its canonical spec text."""
    msg = policy_pb2.Decision(
        action=_ACTION_TO_PB[decision.action],
        cut_point=decision.cut_point,
        threshold=decision.threshold if math.isfinite(decision.threshold) else 0.0,
        policy_id=decision.policy_id,
        policy_version=str(decision.policy_version),
        propensity=decision.propensity if math.isfinite(decision.propensity) else 0.0,
        decision_id=decision_id,
    )
    if decision.codec:
        msg.codec.CopyFrom(tensor_pb2.CodecSpec(text=decision.codec))
    if math.isfinite(decision.expected_latency_ms):
        msg.expected_latency.CopyFrom(duration_from_ms(decision.expected_latency_ms))
    return msg


def decision_from_proto(msg: policy_pb2.Decision) -> Decision:
    """Core form of a received decision (rejects ACTION_UNSPECIFIED)."""
    if msg.action not in _ACTION_FROM_PB:
        raise InvalidArgument("decision.action: ACTION_UNSPECIFIED or unknown value")
    try:
        version = int(msg.policy_version or 0)
    except ValueError as exc:
        raise InvalidArgument(f"decision.policy_version: not an integer: {exc}") from exc
    return Decision(
        action=_ACTION_FROM_PB[msg.action],
        cut_point=msg.cut_point,
        codec=msg.codec.text,
        expected_latency_ms=duration_to_ms(msg.expected_latency)
        if msg.HasField("expected_latency")
        else math.nan,
        threshold=msg.threshold,
        policy_id=msg.policy_id,
        policy_version=version,
        propensity=msg.propensity,
    )


def outcome_from_proto(msg: policy_pb2.Outcome) -> ReportedOutcome:
    """A reported outcome (latency in milliseconds)."""
    return ReportedOutcome(
        decision_id=msg.decision_id,
        correct=msg.correct,
        latency_ms=duration_to_ms(msg.latency),
        cloud_cost=msg.cloud_cost,
        bytes_sent=msg.bytes_sent,
    )


def snapshot_to_proto(snap: PolicySnapshot) -> policy_pb2.PolicyUpdate:
    """The PolicyUpdate that carries ``snap`` to devices."""
    msg = policy_pb2.PolicyUpdate(
        policy_id=snap.policy_id,
        policy_version=str(snap.policy_version),
        kind=snap.kind,
        exit_thresholds=snap.exit_thresholds,
        cut_point=snap.cut_point,
        state=snap.state,
    )
    msg.created_at.CopyFrom(timestamp_from_s(snap.created_at))
    if snap.codec:
        msg.codec.CopyFrom(tensor_pb2.CodecSpec(text=snap.codec))
    return msg


__all__ = [
    "context_from_proto",
    "context_to_proto",
    "decision_from_proto",
    "decision_to_proto",
    "outcome_from_proto",
    "request_context_from_proto",
    "snapshot_to_proto",
]
