"""PolicyService over grpc.aio: thin methods that convert, call the core policy and convert
back. Outcomes are matched to recent decisions by decision id (a bounded table) and fed to
``Policy.update`` with the reward of the combined objective."""

from __future__ import annotations

import collections
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from aiml021.common.v1 import tensor_pb2
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc

from common.errors import AimlError, InvalidArgument
from policy._base import Policy
from policy._objective import ObjectiveWeights
from policy._registry import dumps_state
from policy._types import Decision, DecisionContext, Outcome
from policy.service._converters import (
    context_from_proto,
    decision_to_proto,
    latency_ms_from_proto,
    now_timestamp,
)

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _handle(method: F) -> F:
    """Abort with the gRPC status named like the error's transport-neutral code."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except AimlError as exc:
            await context.abort(grpc.StatusCode[exc.code.value], exc.message)

    return wrapper  # type: ignore[return-value]


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Serves one in-process :class:`Policy`."""

    def __init__(
        self,
        policy: Policy,
        *,
        weights: ObjectiveWeights | None = None,
        max_pending: int = 100_000,
        max_outcomes_per_call: int = 10_000,
    ) -> None:
        self.policy = policy
        self.weights = weights or ObjectiveWeights()
        self.max_outcomes_per_call = max_outcomes_per_call
        self._pending: collections.OrderedDict[str, tuple[DecisionContext, Decision]] = (
            collections.OrderedDict()
        )
        self._max_pending = max_pending

    @_handle
    async def Decide(
        self, request: policy_pb2.DecideRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.DecideResponse:
        if not request.HasField("context"):
            raise InvalidArgument("context: required")
        ctx = context_from_proto(request.context)
        decision = self.policy.decide(ctx)
        decision_id = uuid.uuid4().hex
        self._pending[decision_id] = (ctx, decision)
        if len(self._pending) > self._max_pending:
            self._pending.popitem(last=False)
        return policy_pb2.DecideResponse(decision=decision_to_proto(decision, decision_id))

    @_handle
    async def ReportOutcome(
        self, request: policy_pb2.ReportOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.ReportOutcomeResponse:
        if len(request.outcomes) > self.max_outcomes_per_call:
            raise InvalidArgument(
                f"outcomes: at most {self.max_outcomes_per_call} per call, got {len(request.outcomes)}"
            )
        accepted = 0
        for msg in request.outcomes:
            found = self._pending.pop(msg.decision_id, None)
            if found is None:  # unknown or expired: nothing to learn against
                continue
            ctx, decision = found
            latency = latency_ms_from_proto(msg.latency)
            cost = self.weights.request_cost(
                float(msg.correct), latency, ctx.deadline_ms, msg.cloud_cost, float(msg.bytes_sent)
            )
            self.policy.update(
                Outcome(
                    context=ctx,
                    decision=decision,
                    reward=-float(cost),
                    correct=msg.correct,
                    latency_ms=latency,
                    cloud_cost=msg.cloud_cost,
                    bytes_sent=msg.bytes_sent,
                )
            )
            accepted += 1
        return policy_pb2.ReportOutcomeResponse(accepted=accepted)

    @_handle
    async def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.GetPolicyResponse:
        return policy_pb2.GetPolicyResponse(policy=policy_update(self.policy))


def policy_update(policy: Policy) -> policy_pb2.PolicyUpdate:
    """The PolicyUpdate that carries ``policy`` to devices (thresholds, cut, codec, state)."""
    msg = policy_pb2.PolicyUpdate(
        policy_id=policy.policy_id,
        policy_version=str(policy.version),
        kind=policy.kind,
        state=dumps_state(policy),
        created_at=now_timestamp(),
    )
    profile = getattr(policy, "profile", None)
    thresholds = getattr(policy, "thresholds", None)
    if profile is not None and thresholds is not None:
        for spec, thr in zip(profile.exits, thresholds, strict=True):
            msg.exit_thresholds[spec.name] = float(thr)
    cut = getattr(policy, "cut_point", None)
    codec = getattr(policy, "codec", None)
    if cut:
        msg.cut_point = cut
    if codec:
        msg.codec.CopyFrom(tensor_pb2.CodecSpec(text=codec))
    return msg


def add_to_server(server: grpc.aio.Server, policy: Policy, **kwargs: Any) -> PolicyServicer:
    """Register PolicyService for ``policy`` on ``server``; returns the servicer."""
    servicer = PolicyServicer(policy, **kwargs)
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
    return servicer


__all__ = ["PolicyServicer", "add_to_server", "policy_update"]
