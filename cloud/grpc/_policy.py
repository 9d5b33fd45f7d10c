"""aiml021.policy.v1.PolicyService: convert, call the grpc-free :class:`policy.OnlineLearner`
(decision table, rewards, learning) and :class:`policy.PolicyPublisher`, convert back; and the
PolicyUpdate frames a session stream carries (in Welcome, then on every publish)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import grpc
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc
from aiml021.session.v1 import session_pb2

from cloud.core import current_principal
from cloud.grpc._errors import handle_unary
from cloud.grpc._peer import device_id_from_context
from cloud.grpc._policy_converters import (
    context_from_proto,
    decision_to_proto,
    outcome_from_proto,
    snapshot_to_proto,
)
from common.errors import InvalidArgument
from policy import OnlineLearner, Policy, PolicyPublisher, PolicySnapshot, snapshot

SERVICE = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Serves one learner; GetPolicy answers what ``publisher`` serves (else the learner's
    policy as it is now)."""

    def __init__(
        self,
        learner: OnlineLearner,
        publisher: PolicyPublisher | None = None,
        *,
        max_outcomes_per_call: int = 10_000,
        budget_exhausted: Callable[[str], bool] | None = None,
    ) -> None:
        self.learner = learner
        self.publisher = publisher
        self.max_outcomes_per_call = max_outcomes_per_call
        self.budget_exhausted = budget_exhausted
        """Whether a device's organisation has spent its budget (``accounting.steer_offload``):
        its decisions are then made with no cloud cost allowed, so the policy stays local."""

    @property
    def policy(self) -> Policy:
        """The policy that decides."""
        return self.learner.policy

    @handle_unary
    async def Decide(
        self, request: policy_pb2.DecideRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.DecideResponse:
        if not request.HasField("context"):
            raise InvalidArgument("context: required")
        ctx = context_from_proto(request.context)
        certified = current_principal().device_id
        if certified:  # a device decides as itself (its experiment arm follows its certificate)
            ctx = dataclasses.replace(ctx, device_id=certified)
        if self.budget_exhausted is not None:
            device = device_id_from_context(context) or ctx.device_id
            if self.budget_exhausted(device):
                ctx = dataclasses.replace(ctx, cost_budget=0.0)
        decision_id, decision = self.learner.decide(ctx)
        return policy_pb2.DecideResponse(decision=decision_to_proto(decision, decision_id))

    @handle_unary
    async def ReportOutcome(
        self, request: policy_pb2.ReportOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.ReportOutcomeResponse:
        if len(request.outcomes) > self.max_outcomes_per_call:
            raise InvalidArgument(
                f"outcomes: at most {self.max_outcomes_per_call} per call, got {len(request.outcomes)}"
            )
        accepted = sum(self.learner.report(outcome_from_proto(o)) for o in request.outcomes)
        return policy_pb2.ReportOutcomeResponse(accepted=accepted)

    @handle_unary
    async def GetPolicy(
        self, request: policy_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> policy_pb2.GetPolicyResponse:
        snap = self.publisher.current() if self.publisher is not None else None
        return policy_pb2.GetPolicyResponse(
            policy=snapshot_to_proto(snap or snapshot(self.learner.policy))
        )


def add_to_server(
    server: grpc.aio.Server,
    policy: Policy,
    publisher: PolicyPublisher | None = None,
    **kwargs: Any,
) -> PolicyServicer:
    """Register PolicyService for ``policy`` on ``server``; returns the servicer. ``kwargs``
    go to :class:`policy.OnlineLearner` (``weights``, ``max_pending``)."""
    servicer = PolicyServicer(OnlineLearner(policy, **kwargs), publisher)
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
    return servicer


def welcome_policy(
    publisher: PolicyPublisher | None, device_class: str, device_id: str = ""
) -> policy_pb2.PolicyUpdate | None:
    """The PolicyUpdate a Welcome carries for device ``device_id`` of ``device_class`` (its
    experiment arm's when the class is split; None: none served)."""
    snap = publisher.current(device_class, device_id) if publisher is not None else None
    return snapshot_to_proto(snap) if snap is not None else None


def push_policy_updates(
    publisher: PolicyPublisher,
    device_class: str,
    send: Callable[[Any], None],
    device_id: str = "",
) -> Callable[[], None]:
    """Send a ``ConnectResponse(policy_update=...)`` through ``send`` whenever what device
    ``device_id`` of ``device_class`` runs changes (each version once); returns the function
    that stops it."""
    first = publisher.current(device_class, device_id)
    sent = [(first.policy_id, first.policy_version) if first is not None else None]

    def on_publish(published_class: str, _: PolicySnapshot) -> None:
        if not publisher.applies(published_class, device_class):
            return
        snap = publisher.current(device_class, device_id)
        if snap is None or sent[0] == (snap.policy_id, snap.policy_version):
            return
        sent[0] = (snap.policy_id, snap.policy_version)
        send(session_pb2.ConnectResponse(policy_update=snapshot_to_proto(snap)))

    return publisher.subscribe(on_publish)


__all__ = [
    "SERVICE",
    "PolicyServicer",
    "add_to_server",
    "push_policy_updates",
    "welcome_policy",
]
