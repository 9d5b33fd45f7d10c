"""Hooks the data plane calls: idempotency store, result cache and metadata sink.

In-memory defaults live here; shared implementations (Redis, SQL) plug in through the same
Protocols (see docs/gateway.md). Stores are asynchronous; the metadata sink is a plain callable
that must return at once (queue the record, never block inference).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cloud.core._types import InferenceResult, RequestRecord


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    """A stored answer for an idempotency key, with the digest of the payload that produced it."""

    digest: bytes
    result: InferenceResult


@runtime_checkable
class IdempotencyStore(Protocol):
    """Remembers the result computed for an idempotency key.

    The data plane calls ``get`` before computing: a record with the same digest is returned
    without recomputation (``cached=True``); a record with another digest is rejected with
    FAILED_PRECONDITION. After computing it calls ``put``.
    """

    async def get(self, key: str) -> IdempotencyRecord | None:
        """The record stored for ``key``, or None."""
        ...

    async def put(self, key: str, digest: bytes, result: InferenceResult) -> None:
        """Store ``result`` for ``key`` (first writer wins is fine)."""
        ...


@runtime_checkable
class ResultCache(Protocol):
    """Content-addressed result cache (key: model version + payload digest)."""

    async def get(self, content_key: str) -> InferenceResult | None:
        """The cached result, or None."""
        ...

    async def put(self, content_key: str, result: InferenceResult) -> None:
        """Cache ``result``."""
        ...


class MetadataSink(Protocol):
    """Receives one record per finished request; must not block (fire-and-forget)."""

    def __call__(self, record: RequestRecord) -> None: ...


class MemoryIdempotencyStore:
    """Bounded LRU idempotency store with a TTL, for one gateway process."""

    def __init__(self, max_entries: int = 100_000, ttl_s: float = 3600.0) -> None:
        self._max = max_entries
        self._ttl = ttl_s
        self._items: OrderedDict[str, tuple[float, IdempotencyRecord]] = OrderedDict()

    async def get(self, key: str) -> IdempotencyRecord | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            del self._items[key]
            return None
        return item[1]

    async def put(self, key: str, digest: bytes, result: InferenceResult) -> None:
        if self._max <= 0:
            return
        self._items[key] = (time.monotonic() + self._ttl, IdempotencyRecord(digest, result))
        self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class MemoryResultCache:
    """Bounded LRU result cache."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self._max = max_entries
        self._items: OrderedDict[str, InferenceResult] = OrderedDict()

    async def get(self, content_key: str) -> InferenceResult | None:
        result = self._items.get(content_key)
        if result is not None:
            self._items.move_to_end(content_key)
        return result

    async def put(self, content_key: str, result: InferenceResult) -> None:
        self._items[content_key] = result
        self._items.move_to_end(content_key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


def discard_record(record: RequestRecord) -> None:
    """Default metadata sink: drops the record."""


__all__ = [
    "IdempotencyRecord",
    "IdempotencyStore",
    "MemoryIdempotencyStore",
    "MemoryResultCache",
    "MetadataSink",
    "ResultCache",
    "discard_record",
]
