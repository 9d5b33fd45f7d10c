"""Result cache: exact hits by content hash, similarity hits by cosine similarity of an
embedding taken at a chosen layer, with a TTL, a bounded size (LRU) and hit-rate metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np


def content_key(array: np.ndarray) -> str:
    """SHA-256 of an input's dtype, shape and bytes (hex)."""
    arr = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class CachedAnswer:
    """What the cache returns: the answer and where it originally came from."""

    top_class: int
    confidence: float
    exit_index: int
    exit_name: str
    origin: str
    """Route of the original answer (``edge`` or ``cloud``)."""


@dataclasses.dataclass
class CacheMetrics:
    """Cache counters; ``hit_rate`` = hits / lookups."""

    exact_hits: int = 0
    similar_hits: int = 0
    misses: int = 0
    evictions: int = 0
    expired: int = 0

    @property
    def lookups(self) -> int:
        return self.exact_hits + self.similar_hits + self.misses

    @property
    def hit_rate(self) -> float:
        return (self.exact_hits + self.similar_hits) / self.lookups if self.lookups else 0.0


@dataclasses.dataclass
class _Entry:
    answer: CachedAnswer
    embedding: np.ndarray | None
    expires: float


class ResultCache:
    """Bounded LRU of answers keyed by content hash, with optional similarity lookup."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        similarity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.similarity = similarity
        self.metrics = CacheMetrics()
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._matrix: np.ndarray | None = None
        self._matrix_keys: list[str] = []

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def get(self, key: str) -> CachedAnswer | None:
        """Exact lookup; counts a hit (a miss is counted by :meth:`miss` or a failed
        :meth:`get_similar`, so one request counts once)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._drop(key)
            self.metrics.expired += 1
            return None
        self._entries.move_to_end(key)
        self.metrics.exact_hits += 1
        return entry.answer

    def get_similar(self, embedding: np.ndarray) -> CachedAnswer | None:
        """Most similar unexpired entry whose cosine similarity is >= the threshold."""
        if self.similarity is None or not self._entries:
            return None
        if self._matrix is None:
            keys = [k for k, e in self._entries.items() if e.embedding is not None]
            if not keys:
                return None
            self._matrix_keys = keys
            self._matrix = np.stack([self._entries[k].embedding for k in keys])  # type: ignore[misc]
        if self._matrix.shape[1] != embedding.shape[0]:
            return None
        scores = self._matrix @ embedding.astype(np.float32)
        now = self._clock()
        for idx in np.argsort(-scores):
            if scores[idx] < self.similarity:
                break
            key = self._matrix_keys[int(idx)]
            entry = self._entries.get(key)
            if entry is None or entry.expires <= now:
                continue
            self._entries.move_to_end(key)
            self.metrics.similar_hits += 1
            return entry.answer
        return None

    def miss(self) -> None:
        """Record a lookup that found nothing."""
        self.metrics.misses += 1

    def put(self, key: str, answer: CachedAnswer, embedding: np.ndarray | None = None) -> None:
        """Insert or refresh ``key``; evicts least recently used entries beyond the bound."""
        if not self.enabled:
            return
        emb = None if embedding is None else np.asarray(embedding, np.float32).ravel()
        self._entries[key] = _Entry(answer, emb, self._clock() + self.ttl_s)
        self._entries.move_to_end(key)
        self._matrix = None
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.metrics.evictions += 1

    def clear(self) -> None:
        """Forget every entry (the bundle that answered them was swapped out)."""
        self._entries.clear()
        self._matrix = None

    def _drop(self, key: str) -> None:
        self._entries.pop(key, None)
        self._matrix = None


__all__ = ["CacheMetrics", "CachedAnswer", "ResultCache", "content_key"]
