"""PolicyService transport: proto converters and the grpc.aio servicer (``add_to_server``)."""

from policy.service._converters import (
    context_from_proto,
    context_to_proto,
    decision_from_proto,
    decision_to_proto,
)
from policy.service._servicer import PolicyServicer, add_to_server, policy_update

__all__ = [
    "PolicyServicer",
    "add_to_server",
    "context_from_proto",
    "context_to_proto",
    "decision_from_proto",
    "decision_to_proto",
    "policy_update",
]
