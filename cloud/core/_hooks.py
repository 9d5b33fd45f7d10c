"""Hooks the data plane calls: idempotency store, result cache and metadata sink.

In-memory defaults live here; shared implementations (Redis, SQL) plug in through the same
Protocols (see docs/gateway.md). Stores are asynchronous; the metadata sink is a plain callable
that must return at once (queue the record, never block inference).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cloud.core._types import (
    InferenceRequest,
    InferenceResult,
    ModelSpec,
    RequestRecord,
    TelemetryEvent,
)
from common.errors import FailedPrecondition


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A stored answer for an idempotency key, with the digest of the payload that produced it."""

    digest: bytes
    result: InferenceResult


@runtime_checkable
class IdempotencyStore(Protocol):
    """Claims idempotency keys atomically and remembers the result computed for each.

    The data plane calls ``reserve`` before computing: it returns the stored result of a key
    completed with the same digest (no recomputation), raises FailedPrecondition for another
    digest, waits while another caller (another replica, for shared stores) computes the key,
    and returns None when the caller has claimed the key and must compute it. After computing
    the caller calls ``complete``; when computing fails it calls ``release`` so a retry can
    compute.
    """

    async def reserve(self, key: str, digest: bytes) -> InferenceResult | None:
        """Claim ``key`` (None: compute it now) or return its stored result."""
        ...

    async def complete(self, key: str, digest: bytes, result: InferenceResult) -> None:
        """Store the result of a claimed key."""
        ...

    async def release(self, key: str) -> None:
        """Drop the claim on ``key`` (the computation failed)."""
        ...


@runtime_checkable
class ResultCache(Protocol):
    """Content-addressed result cache (key: served model and version, content hash)."""

    async def get(self, model: str, content_hash: str) -> InferenceResult | None:
        """The cached result, or None (a cache fault is a miss)."""
        ...

    async def put(self, model: str, content_hash: str, result: InferenceResult) -> None:
        """Cache ``result`` (a cache fault is logged, never raised)."""
        ...


class MetadataSink(Protocol):
    """Receives one record per finished request; must not block (fire-and-forget)."""

    def __call__(self, record: RequestRecord, /) -> None: ...


class TelemetrySink(Protocol):
    """Receives device telemetry events; must not block (fire-and-forget)."""

    def __call__(self, event: TelemetryEvent, /) -> None: ...


@runtime_checkable
class RequestRouter(Protocol):
    """Chooses the version of requests that name none (canary, shadow, rollback)."""

    def submit(
        self, request: InferenceRequest, spec: ModelSpec | None = None
    ) -> asyncio.Future[InferenceResult] | None:
        """Queue ``request`` on the version a rollout chooses; None when no rollout applies."""
        ...


class MemoryIdempotencyStore:
    """Bounded idempotency store with a TTL, for one gateway process (claims are in-process)."""

    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        # key -> (expires_at, digest, result or None while computing, event set when done)
        self._items: OrderedDict[
            str, tuple[float, bytes, InferenceResult | None, asyncio.Event]
        ] = OrderedDict()

    async def reserve(self, key: str, digest: bytes) -> InferenceResult | None:
        while True:
            item = self._items.get(key)
            if item is None or (item[2] is not None and item[0] < time.monotonic()):
                self._items[key] = (math.inf, digest, None, asyncio.Event())
                self._items.move_to_end(key)
                self._trim()
                return None
            _, stored, result, event = item
            if stored != digest:
                raise FailedPrecondition(
                    f"idempotency key {key!r} was already used with a different payload"
                )
            if result is not None:
                return result
            await event.wait()

    async def complete(self, key: str, digest: bytes, result: InferenceResult) -> None:
        old = self._items.get(key)
        if self._max <= 0:
            self._items.pop(key, None)
        else:
            self._items[key] = (time.monotonic() + self._ttl, digest, result, asyncio.Event())
            self._items.move_to_end(key)
            self._trim()
        if old is not None:
            old[3].set()

    async def release(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            old[3].set()

    async def get(self, key: str) -> IdempotencyRecord | None:
        """The completed record of ``key``, or None."""
        item = self._items.get(key)
        if item is None or item[2] is None or item[0] < time.monotonic():
            return None
        return IdempotencyRecord(item[1], item[2])

    def _trim(self) -> None:
        excess = len(self._items) - max(self._max, 1)
        if excess <= 0:
            return
        victims = []
        for k, v in self._items.items():  # oldest first; claims being computed stay
            if v[2] is not None:
                victims.append(k)
                if len(victims) >= excess:
                    break
        for k in victims:
            del self._items[k]

    def __len__(self) -> int:
        return len(self._items)


class MemoryResultCache:
    """Bounded LRU result cache."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._items: OrderedDict[tuple[str, str], InferenceResult] = OrderedDict()

    async def get(self, model: str, content_hash: str) -> InferenceResult | None:
        key = (model, content_hash)
        result = self._items.get(key)
        if result is not None:
            self._items.move_to_end(key)
        return result

    async def put(self, model: str, content_hash: str, result: InferenceResult) -> None:
        key = (model, content_hash)
        self._items[key] = result
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


def discard_record(record: RequestRecord) -> None:
    """Default metadata sink: drops the record."""


def discard_telemetry(event: TelemetryEvent) -> None:
    """Default telemetry sink: drops the event."""


__all__ = [
    "IdempotencyRecord",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "MemoryResultCache",
    "MetadataSink",
    "RequestRouter",
    "ResultCache",
    "TelemetrySink",
    "discard_record",
    "discard_telemetry",
]
