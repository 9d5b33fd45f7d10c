"""Idempotency stores: a repeated idempotency key returns the stored result, never recomputes.

Protocol for the caller (the data plane)::

    outcome = await store.reserve(key, digest)     # FailedPrecondition if digest differs
    if outcome.result is not None:                 # someone computed it already
        return outcome.result
    try:
        result = await compute()
    except BaseException:
        await store.release(key)                   # let a retry compute it
        raise
    await store.complete(key, digest, result)

``reserve`` claims the key atomically (Redis ``SET NX``) so that two replicas receiving the same
key at the same time compute it once: the loser waits for the winner's result (bounded by
``wait_timeout_s``; then UNAVAILABLE, retry later). Results are opaque bytes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from common.errors import FailedPrecondition, InvalidArgument, Unavailable

log = logging.getLogger(__name__)

_PENDING = "pending"
_DONE = "done"
MAX_KEY_LENGTH = 256


@dataclass(frozen=True)
class Reservation:
    """Outcome of :meth:`IdempotencyStore.reserve`: ``result`` is None when the caller must compute."""

    key: str
    result: bytes | None


@runtime_checkable
class IdempotencyStore(Protocol):
    """Shared record of idempotency keys and the results computed for them."""

    async def reserve(self, key: str, digest: str) -> Reservation:
        """Claim ``key`` for computing, or return its stored result (waiting if in progress)."""
        ...

    async def lookup(self, key: str) -> tuple[str, bytes] | None:
        """(digest, result) of a completed key without claiming it, or None."""
        ...

    async def complete(self, key: str, digest: str, result: bytes) -> None:
        """Store the result for ``key``; later ``reserve`` calls return it until the TTL passes."""
        ...

    async def release(self, key: str) -> None:
        """Drop an unfinished claim (the computation failed), so that a retry can compute."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def payload_digest(*parts: bytes) -> str:
    """Hex sha256 over the request's payload parts, the digest stored with its key."""
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"idempotency key must be 1..{MAX_KEY_LENGTH} characters")


def _mismatch(key: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"idempotency key {key!r} was already used with a different payload; "
        "use a new key for a new request"
    )


class MemoryIdempotencyStore:
    """In-process store (the default): one gateway replica, lost on restart."""

    def __init__(
        self, ttl_s: float = 86400.0, pending_ttl_s: float = 60.0, max_keys: int = 100_000
    ) -> None:
        self._ttl_s = ttl_s
        self._pending_ttl_s = pending_ttl_s
        self._max_keys = max_keys
        # key -> (state, digest, result, expires_at, event)
        self._entries: dict[str, tuple[str, str, bytes | None, float, asyncio.Event]] = {}

    def _expire(self, now: float) -> None:
        if len(self._entries) < self._max_keys:
            return
        for k in [k for k, v in self._entries.items() if v[3] <= now]:
            del self._entries[k]
        while len(self._entries) >= self._max_keys:  # oldest first (dict keeps insertion order)
            del self._entries[next(iter(self._entries))]

    async def reserve(self, key: str, digest: str) -> Reservation:
        _check_key(key)
        while True:
            now = time.monotonic()
            entry = self._entries.get(key)
            if entry is None or entry[3] <= now:
                self._expire(now)
                self._entries[key] = (
                    _PENDING,
                    digest,
                    None,
                    now + self._pending_ttl_s,
                    asyncio.Event(),
                )
                return Reservation(key, None)
            state, stored_digest, result, expires_at, event = entry
            if stored_digest != digest:
                raise _mismatch(key)
            if state == _DONE:
                return Reservation(key, result)
            try:
                await asyncio.wait_for(event.wait(), timeout=max(0.0, expires_at - now))
            except TimeoutError:
                continue  # the claim expired; loop claims it

    async def lookup(self, key: str) -> tuple[str, bytes] | None:
        """(digest, result) of a completed key, or None."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != _DONE or entry[3] <= time.monotonic() or entry[2] is None:
            return None
        return entry[1], entry[2]

    async def complete(self, key: str, digest: str, result: bytes) -> None:
        old = self._entries.get(key)
        self._entries[key] = (
            _DONE,
            digest,
            result,
            time.monotonic() + self._ttl_s,
            asyncio.Event(),
        )
        if old is not None:
            old[4].set()

    async def release(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            old[4].set()

    async def close(self) -> None:
        self._entries.clear()


class RedisIdempotencyStore:
    """Redis-backed store shared by every gateway replica (redis.asyncio).

    Each key maps to one JSON-headed value ``{"s": state, "d": digest}`` followed by the result
    bytes; claims are ``SET NX PX pending_ttl`` so a crashed replica's claim expires.
    """

    def __init__(
        self,
        client: Any,
        *,
        ttl_s: float = 86400.0,
        pending_ttl_s: float = 60.0,
        wait_timeout_s: float = 30.0,
        poll_interval_s: float = 0.01,
        prefix: str = "aiml021:idem:",
    ) -> None:
        self._redis = client
        self._ttl_ms = int(ttl_s * 1000)
        self._pending_ttl_ms = int(pending_ttl_s * 1000)
        self._wait_timeout_s = wait_timeout_s
        self._poll_s = poll_interval_s
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisIdempotencyStore:
        """Connect lazily to the Redis at ``url`` (``redis://host:port/db``)."""
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url), **kwargs)

    @staticmethod
    def _pack(state: str, digest: str, result: bytes = b"") -> bytes:
        head = json.dumps({"s": state, "d": digest}).encode()
        return len(head).to_bytes(4, "little") + head + result

    @staticmethod
    def _unpack(value: bytes) -> tuple[str, str, bytes]:
        n = int.from_bytes(value[:4], "little")
        head = json.loads(value[4 : 4 + n])
        return str(head["s"]), str(head["d"]), bytes(value[4 + n :])

    async def reserve(self, key: str, digest: str) -> Reservation:
        _check_key(key)
        rkey = self._prefix + key
        deadline = time.monotonic() + self._wait_timeout_s
        try:
            while True:
                if await self._redis.set(
                    rkey, self._pack(_PENDING, digest), nx=True, px=self._pending_ttl_ms
                ):
                    return Reservation(key, None)
                value = await self._redis.get(rkey)
                if value is None:
                    continue  # expired between SET and GET: try to claim again
                state, stored_digest, result = self._unpack(value)
                if stored_digest != digest:
                    raise _mismatch(key)
                if state == _DONE:
                    return Reservation(key, result)
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"request with idempotency key {key!r} is still being computed; retry later"
                    )
                await asyncio.sleep(self._poll_s)
        except OSError as exc:
            raise Unavailable(f"idempotency store unreachable: {exc}") from exc
        except Exception as exc:
            if _is_redis_error(exc):
                raise Unavailable(f"idempotency store unreachable: {exc}") from exc
            raise

    async def lookup(self, key: str) -> tuple[str, bytes] | None:
        """(digest, result) of a completed key, or None (Unavailable when Redis is down)."""
        try:
            value = await self._redis.get(self._prefix + key)
        except Exception as exc:
            if isinstance(exc, OSError) or _is_redis_error(exc):
                raise Unavailable(f"idempotency store unreachable: {exc}") from exc
            raise
        if value is None:
            return None
        state, digest, result = self._unpack(value)
        return (digest, result) if state == _DONE else None

    async def complete(self, key: str, digest: str, result: bytes) -> None:
        try:
            await self._redis.set(
                self._prefix + key, self._pack(_DONE, digest, result), px=self._ttl_ms
            )
        except Exception as exc:
            if _is_redis_error(exc):
                # The answer still goes to the caller; only replay protection is weakened.
                log.warning("could not store idempotent result for %r: %s", key, exc)
                return
            raise

    async def release(self, key: str) -> None:
        try:
            await self._redis.delete(self._prefix + key)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            log.warning("could not release idempotency claim %r: %s", key, exc)

    async def close(self) -> None:
        await self._redis.aclose()


def _is_redis_error(exc: BaseException) -> bool:
    import redis.exceptions

    return isinstance(exc, redis.exceptions.RedisError)
