"""The seams the data plane calls: idempotency store, result cache, metadata and telemetry
sinks, and the rollout router.

One Protocol per store; the implementations (in-memory, Redis, the SQL metadata writer) live in
:mod:`cloud.stores` and implement these Protocols directly (see docs/integrations.md). Stores are
asynchronous; the sinks are plain callables that must return at once (queue the record, never
block inference).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from cloud.core._types import (
    InferenceRequest,
    InferenceResult,
    ModelSpec,
    RequestRecord,
    TelemetryEvent,
)


@runtime_checkable
class IdempotencyStore(Protocol):
    """Claims idempotency keys atomically and remembers the result computed for each.

    The data plane calls ``reserve`` before computing: it returns the stored result of a key
    completed with the same digest (no recomputation), raises FailedPrecondition for another
    digest, waits while another caller (another replica, for shared stores) computes the key,
    and returns None when the caller has claimed the key and must compute it. After computing
    the caller calls ``complete``; when computing fails it calls ``release`` so a retry can
    compute::

        stored = await store.reserve(key, digest)
        if stored is not None:
            return stored
        try:
            result = await compute()
        except BaseException:
            await store.release(key)
            raise
        await store.complete(key, digest, result)
    """

    async def reserve(self, key: str, digest: bytes) -> InferenceResult | None:
        """Claim ``key`` (None: compute it now) or return its stored result."""
        ...

    async def complete(self, key: str, digest: bytes, result: InferenceResult) -> None:
        """Store the result of a claimed key; ``reserve`` returns it until its TTL passes."""
        ...

    async def release(self, key: str) -> None:
        """Drop the claim on ``key`` (the computation failed) so that a retry can compute."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


@dataclass(frozen=True)
class CacheEntry:
    """A cached answer: the outputs of one single-sample request and its top class."""

    outputs: Mapping[str, np.ndarray]
    top_class: int = 0
    confidence: float = 0.0
    model_version: str = ""
    stored_at: float = field(default_factory=time.time)
    """Seconds since the epoch when the entry was stored."""

    @classmethod
    def of(cls, result: InferenceResult) -> CacheEntry:
        """The entry caching ``result`` (top class: argmax of a ``[1, N]`` first output)."""
        first = next(iter(result.outputs.values()), None)
        top = 0
        if first is not None and first.ndim == 2 and first.shape[0] == 1:
            top = int(np.asarray(first)[0].argmax())
        return cls(outputs=result.outputs, top_class=top, model_version=result.model_version)

    def result(self, model_name: str, model_version: str) -> InferenceResult:
        """The answer this entry holds for ``model_name`` (its own version when it has one)."""
        return InferenceResult(
            model_name=model_name,
            model_version=self.model_version or model_version,
            outputs=dict(self.outputs),
            batch_size=1,
        )


@runtime_checkable
class ResultCache(Protocol):
    """Content-addressed result cache keyed by (served model, content hash).

    The data plane keys it by ``name:version`` and :func:`cloud.core.content_hash`; CacheService
    serves the same cache to devices. Implementations reject malformed keys with InvalidArgument.
    """

    async def get(self, model_name: str, content_hash: str) -> CacheEntry | None:
        """The stored entry, or None when absent or expired (a shared cache's fault is a miss)."""
        ...

    async def put(
        self, model_name: str, content_hash: str, entry: CacheEntry, ttl_s: float | None = None
    ) -> None:
        """Store ``entry``; ``ttl_s`` None or 0 uses the cache's default time to live."""
        ...

    async def close(self) -> None:
        """Release connections."""
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


def discard_record(record: RequestRecord) -> None:
    """Default metadata sink: drops the record."""


def discard_telemetry(event: TelemetryEvent) -> None:
    """Default telemetry sink: drops the event."""


__all__ = [
    "CacheEntry",
    "IdempotencyStore",
    "MetadataSink",
    "RequestRouter",
    "ResultCache",
    "TelemetrySink",
    "discard_record",
    "discard_telemetry",
]
