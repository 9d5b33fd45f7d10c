"""What the audit trail records: one :class:`AuditEvent` per management action and per refused
(unauthenticated or unauthorized) call, handed to an :class:`AuditSink` (``cloud.stores``
appends it to a hash-chained table in the metadata database)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One audited action."""

    principal: str
    """Who: the device id or token subject (``anonymous`` when authentication failed)."""
    role: str
    """The principal's role ('' when unauthenticated)."""
    org: str
    action: str
    """The gRPC method (``/pkg.Service/Method``) or REST route (``POST /v1/deploy/canary``)."""
    resource: str
    """What it acted on (a model, a rollout, ...; '' when the call names nothing)."""
    outcome: str
    """``OK``, ``UNAUTHENTICATED``, ``PERMISSION_DENIED`` or the error code the action ended with."""
    detail: str = ""
    """Why it was refused, or what changed (bounded length)."""
    at: float = field(default_factory=time.time)
    """Unix time."""


class AuditSink(Protocol):
    """Receives audit events; must not block (the store appends them off the request path)."""

    def __call__(self, event: AuditEvent, /) -> None: ...


def discard_audit(event: AuditEvent, /) -> None:
    """An :class:`AuditSink` that keeps nothing (no metadata store configured)."""


__all__ = ["AuditEvent", "AuditSink", "discard_audit"]
