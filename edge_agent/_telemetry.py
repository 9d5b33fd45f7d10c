"""Per-request telemetry: recorded without blocking inference into a bounded buffer, batched
onto the session stream by a background task; plus the agent's local summary statistics."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import time
from collections.abc import Callable

import numpy as np

from edge_agent._types import EdgeResult

log = logging.getLogger(__name__)
access_log = logging.getLogger("aiml021.access")
"""One line per answer (INFO; off unless logging is configured with access lines)."""

Event = dict[str, object]


def event_of(result: EdgeResult, model_name: str) -> Event:
    """The telemetry event of one finished request."""
    t = result.timing
    return {
        "request_id": result.request_id,
        "finished_at": time.time(),
        "model_name": model_name,
        "route": result.route.value,
        "exit_index": result.exit_index,
        "edge_compute_ms": t.edge_compute_ms,
        "encode_ms": t.encode_ms,
        "network_ms": t.network_ms,
        "cloud_compute_ms": t.cloud_compute_ms,
        "total_ms": t.total_ms,
        "bytes_sent": result.bytes_sent,
        "cache_hit": result.cache_hit,
        "cut_point": result.cut_point,
        "codec": result.codec,
        "confidence": result.confidence,
    }


def log_answer(result: EdgeResult, model_name: str) -> None:
    """The access-log line of one answer (the same fields as the gateway's)."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    access_log.info(
        "edge %s %s",
        model_name,
        result.route.value,
        extra={
            "request_id": result.request_id,
            "model": model_name,
            "route": result.route.value,
            "decision": result.exit_name or result.route.value,
            "status": "OK",
            "latency_ms": round(result.timing.total_ms, 3),
        },
    )


class TelemetryBuffer:
    """Bounded event buffer; the oldest events are dropped (and counted) when it is full."""

    def __init__(self, capacity: int) -> None:
        self._events: collections.deque[Event] = collections.deque()
        self.capacity = capacity
        self.dropped = 0
        self.sent = 0

    def __len__(self) -> int:
        return len(self._events)

    def record(self, event: Event) -> None:
        """Append without blocking."""
        if len(self._events) >= self.capacity:
            self._events.popleft()
            self.dropped += 1
        self._events.append(event)

    def take(self, n: int) -> list[Event]:
        """Remove and return up to ``n`` oldest events."""
        out: list[Event] = []
        while self._events and len(out) < n:
            out.append(self._events.popleft())
        return out

    def put_back(self, events: list[Event]) -> None:
        """Return events that could not be sent to the front of the buffer."""
        for e in reversed(events):
            if len(self._events) < self.capacity:
                self._events.appendleft(e)
            else:
                self.dropped += 1


async def telemetry_loop(
    buffer: TelemetryBuffer,
    send: Callable[[list[Event], int], bool],
    batch: int,
    interval_s: float,
) -> None:
    """Send full batches as soon as they fill, partial ones every ``interval_s``; ``send``
    returns False while no stream is open (events then stay buffered)."""
    last = time.monotonic()
    while True:
        await asyncio.sleep(min(interval_s, 0.05))
        due = time.monotonic() - last >= interval_s
        while len(buffer) >= batch or (due and len(buffer)):
            events = buffer.take(batch)
            dropped = buffer.dropped
            if not send(events, dropped):
                buffer.put_back(events)
                break
            buffer.sent += len(events)
            due = False
        if due or len(buffer) == 0:
            last = time.monotonic()


@dataclasses.dataclass
class AgentStats:
    """Local summary: routes, exits, bytes and a bounded latency sample."""

    routes: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    exits: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    requests: int = 0
    bytes_sent: int = 0
    latencies_ms: collections.deque[float] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=100_000)
    )

    def add(self, result: EdgeResult) -> None:
        self.requests += 1
        self.routes[result.route.value] += 1
        self.exits[result.exit_name] += 1
        self.bytes_sent += result.bytes_sent
        self.latencies_ms.append(result.timing.total_ms)

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
        """Latency percentiles in ms (empty dict before any request)."""
        if not self.latencies_ms:
            return {}
        arr = np.fromiter(self.latencies_ms, dtype=np.float64)
        return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs}


__all__ = ["AgentStats", "Event", "TelemetryBuffer", "event_of", "log_answer", "telemetry_loop"]
