"""Transport-neutral session frames and limits: what the transport hands :class:`SessionCore`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

from cloud.core._codec import PayloadFormat, PayloadPart
from cloud.core._types import InferenceRequest, InferenceResult, ModelSpec, Priority
from common.errors import AimlError
from policy import DecisionContext


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """Limits negotiated for a session (sent to the device in Welcome)."""

    max_request_bytes: int
    max_chunk_bytes: int
    max_inflight_requests: int
    max_session_buffer_bytes: int
    reassembly_timeout_s: float
    ping_interval_s: float


class ByteBudget:
    """A shared byte budget (the gateway-wide buffer limit)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def reserve(self, n: int) -> bool:
        """Take ``n`` bytes if they fit; False otherwise."""
        if self.used + n > self.capacity:
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        """Give ``n`` bytes back."""
        self.used -= n


@dataclass(slots=True)
class RequestHeader:
    """Transport-neutral InferHeader."""

    request_id: str
    model_name: str
    model_version: str
    cut_point: str
    payload: PayloadFormat
    total_bytes: int
    deadline: float | None = None
    """Monotonic instant, or None."""
    priority: Priority = Priority.NORMAL
    parts: tuple[PayloadPart, ...] = ()
    """The tensors of a multi-tensor request (InferHeader.parts), payload in this order; empty:
    one tensor, described by ``payload``."""
    idempotency_key: str = ""
    payload_digest: bytes = b""
    deferred: bool = False
    """A deferred refinement replayed from the device's offline queue."""
    inline_payload: bytes = b""
    """The whole payload when the header carries it inline; empty when chunks follow."""
    context: DecisionContext | None = None
    """What the device knew when it offloaded (InferHeader.context), in the policy's terms."""
    region: str = ""
    """Region the device declares (InferHeader.context.region)."""
    traceparent: str = ""
    """W3C trace context of the device's span (InferHeader.traceparent)."""

    def answer_deadline(self) -> float | None:
        """The last instant an answer is worth computing: the device's deadline less the half
        of its RTT the answer needs to travel back (monotonic; None: no deadline)."""
        if self.deadline is None or self.context is None:
            return self.deadline
        return self.deadline - self.context.rtt_ms / 2e3


@dataclass(slots=True)
class Chunk:
    """Transport-neutral TensorChunk."""

    request_id: str
    offset: int
    data: bytes
    last: bool


@dataclass(slots=True)
class Pending:
    """A request open on a session (reassembling, queued or computing); the core's own."""

    header: RequestHeader
    spec: ModelSpec
    started: float
    parts: list[bytes] = field(default_factory=list)
    received: int = 0
    timer: asyncio.TimerHandle | None = None
    future: asyncio.Future[InferenceResult] | None = None
    request: InferenceRequest | None = None
    inline: bool = False
    decode_s: float = 0.0


class SessionSink(Protocol):
    """Where a session's answers go (the transport converts and writes them)."""

    def result(self, request_id: str, result: InferenceResult, spec: ModelSpec) -> None:
        """Send ``result``; raises an AimlError (and sends nothing) when it cannot be sent, e.g.
        an answer larger than the device may receive: the session then answers that error."""
        ...

    def error(self, request_id: str, error: AimlError) -> None: ...

    def credit(self, nbytes: int, requests: int) -> None: ...


__all__ = ["ByteBudget", "Chunk", "RequestHeader", "SessionLimits", "SessionSink"]
