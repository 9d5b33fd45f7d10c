"""Result caches (``cloud.core.ResultCache``) keyed by (model name, content hash): in-memory LRU
(default) and Redis.

Entries (``cloud.core.CacheEntry``) hold the outputs and the answer's top class and confidence.
Values in Redis are framed by :mod:`._serde` (never pickled) and expire after their TTL.
"""

from __future__ import annotations

import logging
import re
import time
from collections import OrderedDict
from typing import Any

from cloud.core import CacheEntry
from common.errors import InvalidArgument

from ._serde import decode_entry, encode_entry

log = logging.getLogger(__name__)

_HASH = re.compile(r"^[0-9a-f]{64}$")


def check_cache_key(model_name: str, content_hash: str) -> None:
    """Reject keys a cache must not store: empty model name, content hash not 64 hex digits."""
    # 256 characters of the client's plus the gateway's tenant namespace (cloud.core._tenancy)
    if not model_name or len(model_name) > 320:
        raise InvalidArgument("model_name must be 1..256 characters")
    if not _HASH.match(content_hash):
        raise InvalidArgument(
            "content_hash must be the lowercase hex sha256 of the input (64 characters)"
        )


class MemoryResultCache:
    """Bounded in-process LRU cache with per-entry expiry."""

    def __init__(self, default_ttl_s: float = 3600.0, max_entries: int = 10_000) -> None:
        self._ttl_s = default_ttl_s
        self._max = max_entries
        self._entries: OrderedDict[tuple[str, str], tuple[float, CacheEntry]] = OrderedDict()

    async def get(self, model_name: str, content_hash: str) -> CacheEntry | None:
        check_cache_key(model_name, content_hash)
        key = (model_name, content_hash)
        item = self._entries.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return item[1]

    async def put(
        self, model_name: str, content_hash: str, entry: CacheEntry, ttl_s: float | None = None
    ) -> None:
        check_cache_key(model_name, content_hash)
        ttl = ttl_s if ttl_s else self._ttl_s
        key = (model_name, content_hash)
        self._entries[key] = (time.monotonic() + ttl, entry)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def close(self) -> None:
        self._entries.clear()


class RedisResultCache:
    """Redis-backed cache shared by replicas; misses (not errors) when Redis is unreachable.

    It also keeps, per owner (``cloud.core.CacheOwnerIndex``: the principal whose request wrote
    or read an entry), the set of entry keys they touched, under ``OWNERS_PREFIX + owner`` and
    for as long as those entries live, so that erasing a device (``aiml021 privacy forget``)
    finds its entries in a cache its org shares.
    """

    OWNERS_PREFIX = "aiml021:cache-owner:"
    _NOTED_MAX = 10_000

    def __init__(
        self, client: Any, *, default_ttl_s: float = 3600.0, prefix: str = "aiml021:cache:"
    ) -> None:
        self._redis = client
        self._ttl_s = default_ttl_s
        self._prefix = prefix
        # (owner, key) -> (the entry's stored_at, monotonic expiry) of the last note: a reader
        # already recorded for this very entry costs no round trip on its next hits (bounded; an
        # entry stored again, e.g. after ``forget``, has another stored_at and is noted again).
        self._noted: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisResultCache:
        """Connect lazily to the Redis at ``url``."""
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url), **kwargs)

    def _key(self, model_name: str, content_hash: str) -> str:
        return f"{self._prefix}{model_name}:{content_hash}"

    async def get(self, model_name: str, content_hash: str) -> CacheEntry | None:
        import redis.exceptions

        check_cache_key(model_name, content_hash)
        try:
            value = await self._redis.get(self._key(model_name, content_hash))
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("result cache unreachable, treating as a miss: %s", exc)
            return None
        return None if value is None else decode_entry(value)

    async def put(
        self, model_name: str, content_hash: str, entry: CacheEntry, ttl_s: float | None = None
    ) -> None:
        import redis.exceptions

        check_cache_key(model_name, content_hash)
        ttl_ms = int((ttl_s if ttl_s else self._ttl_s) * 1000)
        try:
            await self._redis.set(
                self._key(model_name, content_hash), encode_entry(entry), px=max(1, ttl_ms)
            )
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("result cache unreachable, entry not stored: %s", exc)

    async def note_owner(
        self,
        owner: str,
        model_name: str,
        content_hash: str,
        ttl_s: float | None = None,
        stored_at: float = 0.0,
    ) -> None:
        """Add the entry (stored at ``stored_at``) to ``owner``'s set, which lives at least as
        long as the entry. If that fails the entry is deleted: no entry stays that ``forget``
        could not find."""
        import redis.exceptions

        key = self._key(model_name, content_hash)
        now = time.monotonic()
        ttl = ttl_s if ttl_s else self._ttl_s
        noted = self._noted.get((owner, key))
        if noted is not None and noted[0] == stored_at and noted[1] > now:
            return  # this owner is already recorded for this very entry
        owners = self.OWNERS_PREFIX + owner
        ttl_ms = max(1, int(ttl * 1000))
        try:
            pipe = self._redis.pipeline(transaction=False)  # one round trip
            pipe.sadd(owners, key)
            pipe.pexpire(owners, ttl_ms, nx=True)  # a new set: as long as this entry
            pipe.pexpire(owners, ttl_ms, gt=True)  # else only ever extended
            await pipe.execute()
            self._noted[(owner, key)] = (stored_at, now + ttl)
            self._noted.move_to_end((owner, key))
            while len(self._noted) > self._NOTED_MAX:
                self._noted.popitem(last=False)
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("result cache owner not recorded, entry dropped: %s", exc)
            try:
                await self._redis.delete(key)
            except (redis.exceptions.RedisError, OSError):
                pass

    async def close(self) -> None:
        await self._redis.aclose()
