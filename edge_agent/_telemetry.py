"""Per-request telemetry: recorded without blocking inference into a bounded buffer, batched
onto the session stream by a background task; plus the agent's local summary statistics."""

from __future__ import annotations

import asyncio
import bisect
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


LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Request latency histogram buckets (seconds), the gateway's request histogram's."""


class RouteLatency:
    """Request latency per route as histogram counts (one row per route: a closed set)."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = collections.defaultdict(float)

    def observe(self, route: str, seconds: float) -> None:
        counts = self._counts.get(route)
        if counts is None:
            counts = self._counts[route] = [0] * (len(LATENCY_BUCKETS_S) + 1)
        counts[bisect.bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self._sums[route] += seconds

    def snapshot(self) -> dict[str, tuple[list[int], float]]:
        """Per route: the count in each bucket (the last: above every bound) and the sum."""
        return {r: (list(c), self._sums[r]) for r, c in sorted(self._counts.items())}


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
    latency: RouteLatency = dataclasses.field(default_factory=RouteLatency)
    """Every request's latency by route (the sample above keeps only the last 100,000)."""

    def add(self, result: EdgeResult) -> None:
        self.requests += 1
        self.routes[result.route.value] += 1
        self.exits[result.exit_name] += 1
        self.bytes_sent += result.bytes_sent
        self.latencies_ms.append(result.timing.total_ms)
        self.latency.observe(result.route.value, result.timing.total_ms / 1e3)

    def percentiles(self, qs: tuple[float, ...] = (50, 95, 99)) -> dict[str, float]:
        """Latency percentiles in ms (empty dict before any request)."""
        if not self.latencies_ms:
            return {}
        arr = np.fromiter(self.latencies_ms, dtype=np.float64)
        return {f"p{int(q)}": float(np.percentile(arr, q)) for q in qs}


__all__ = [
    "LATENCY_BUCKETS_S",
    "AgentStats",
    "Event",
    "RouteLatency",
    "TelemetryBuffer",
    "event_of",
    "log_answer",
    "telemetry_loop",
]
