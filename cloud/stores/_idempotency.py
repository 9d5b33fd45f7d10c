"""Idempotency stores (``cloud.core.IdempotencyStore``): a repeated idempotency key returns the
stored result, never recomputes.

``reserve`` claims a key atomically (in process for the memory store, Redis ``SET NX`` for the
shared one) so that two requests with the same key compute it once: the later one waits for the
first one's result (in Redis bounded by ``wait_timeout_s``; then UNAVAILABLE, retry later). A
claim whose owner crashed expires after ``pending_ttl_s``; a completed key answers until
``ttl_s`` passes. In Redis a live owner renews its claims every third of ``pending_ttl_s``
while it computes, so a claim expires only when its owner is gone, never because the request
queued or computed for long (another replica would then compute it a second time).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from cloud.core import InferenceResult
from common.errors import FailedPrecondition, InvalidArgument, Unavailable

from ._serde import decode_result, encode_result

log = logging.getLogger(__name__)

_PENDING = "pending"
_DONE = "done"
MAX_KEY_LENGTH = 320
"""256 characters of the client's key plus the gateway's tenant namespace (cloud.core._tenancy)."""


def _check_key(key: str) -> None:
    if not key or len(key) > MAX_KEY_LENGTH:
        raise InvalidArgument(f"idempotency key must be 1..{MAX_KEY_LENGTH} characters")


def _mismatch(key: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"idempotency key {key!r} was already used with a different payload; "
        "use a new key for a new request"
    )


@dataclass
class _Entry:
    digest: bytes
    result: InferenceResult | None  # None while the claim's owner computes
    expires_at: float
    done: asyncio.Event = field(default_factory=asyncio.Event)


class MemoryIdempotencyStore:
    """In-process store (the default): one gateway replica, lost on restart.

    Holds at most ``max_keys`` keys: the oldest completed (or expired) keys go first; claims
    still being computed stay, so a duplicate never computes a key twice.
    """

    def __init__(
        self, ttl_s: float = 86400.0, pending_ttl_s: float = 60.0, max_keys: int = 100_000
    ) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be >= 1")
        self._ttl_s = ttl_s
        self._pending_ttl_s = pending_ttl_s
        self._max_keys = max_keys
        # Oldest first: completing a key moves it to the end, so completed keys are in
        # expiry order and eviction finds the oldest at the front.
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _make_room(self, now: float) -> None:
        excess = len(self._entries) - self._max_keys + 1
        if excess <= 0:
            return
        victims = []
        for key, entry in self._entries.items():
            if entry.result is not None or entry.expires_at <= now:
                victims.append(key)
                if len(victims) >= excess:
                    break
        for key in victims:
            self._entries.pop(key).done.set()

    async def reserve(self, key: str, digest: bytes) -> InferenceResult | None:
        _check_key(key)
        while True:
            now = time.monotonic()
            entry = self._entries.get(key)
            if entry is None or entry.expires_at <= now:
                if entry is not None:
                    del self._entries[key]
                    entry.done.set()
                self._make_room(now)
                self._entries[key] = _Entry(digest, None, now + self._pending_ttl_s)
                return None
            if entry.digest != digest:
                raise _mismatch(key)
            if entry.result is not None:
                return entry.result
            try:
                await asyncio.wait_for(entry.done.wait(), timeout=max(0.0, entry.expires_at - now))
            except TimeoutError:
                continue  # the claim expired; the loop claims it

    async def complete(self, key: str, digest: bytes, result: InferenceResult) -> None:
        now = time.monotonic()
        old = self._entries.pop(key, None)
        if old is None:
            self._make_room(now)
        self._entries[key] = _Entry(digest, result, now + self._ttl_s)
        if old is not None:
            old.done.set()

    async def release(self, key: str) -> None:
        old = self._entries.pop(key, None)
        if old is not None:
            old.done.set()

    async def close(self) -> None:
        self._entries.clear()


class RedisIdempotencyStore:
    """Redis-backed store shared by every gateway replica (redis.asyncio).

    Each key maps to one JSON-headed value ``{"s": state, "d": hex digest}`` followed by the
    framed result; claims are ``SET NX PX pending_ttl`` so a crashed replica's claim expires.
    The claims this store holds are renewed (``PEXPIRE``, only while the value is still this
    claim) every ``pending_ttl_s / 3`` until completed or released, for at most
    ``max_claim_s``.
    """

    _RENEW = """
    if redis.call('GET', KEYS[1]) == ARGV[1] then
        return redis.call('PEXPIRE', KEYS[1], ARGV[2])
    end
    return 0
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
        max_claim_s: float = 600.0,
    ) -> None:
        self._redis = client
        self._ttl_ms = int(ttl_s * 1000)
        self._pending_ttl_ms = int(pending_ttl_s * 1000)
        self._wait_timeout_s = wait_timeout_s
        self._poll_s = poll_interval_s
        self._prefix = prefix
        self._max_claim_s = max_claim_s
        self._claims: dict[str, tuple[bytes, float]] = {}
        """Claims held here: Redis key -> (the claim's value, when it was taken)."""
        self._renewer: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisIdempotencyStore:
        """Connect lazily to the Redis at ``url`` (``redis://host:port/db``)."""
        import redis.asyncio as aioredis

        return cls(aioredis.Redis.from_url(url), **kwargs)

    @staticmethod
    def _pack(state: str, digest: bytes, result: bytes = b"") -> bytes:
        head = json.dumps({"s": state, "d": digest.hex()}).encode()
        return len(head).to_bytes(4, "little") + head + result

    @staticmethod
    def _unpack(value: bytes) -> tuple[str, bytes, bytes]:
        n = int.from_bytes(value[:4], "little")
        head = json.loads(value[4 : 4 + n])
        return str(head["s"]), bytes.fromhex(head["d"]), bytes(value[4 + n :])

    async def reserve(self, key: str, digest: bytes) -> InferenceResult | None:
        _check_key(key)
        rkey = self._prefix + key
        deadline = time.monotonic() + self._wait_timeout_s
        try:
            while True:
                claim = self._pack(_PENDING, digest)
                if await self._redis.set(rkey, claim, nx=True, px=self._pending_ttl_ms):
                    self._hold(rkey, claim)
                    return None
                value = await self._redis.get(rkey)
                if value is None:
                    continue  # expired between SET and GET: try to claim again
                state, stored_digest, frame = self._unpack(value)
                if stored_digest != digest:
                    raise _mismatch(key)
                if state == _DONE:
                    return decode_result(frame)
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

    def _hold(self, rkey: str, claim: bytes) -> None:
        self._claims[rkey] = (claim, time.monotonic())
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(
                self._renew_claims(), name="idempotency-claim-renewer"
            )

    @property
    def claims_held(self) -> int:
        """Claims this store took and has not completed or released yet."""
        return len(self._claims)

    async def _renew_claims(self) -> None:
        """Every third of ``pending_ttl``: extend each claim held here (one pipelined round
        trip), drop the ones lost (expired or taken over) or held past ``max_claim_s``; ends
        when none is held."""
        script = self._redis.register_script(self._RENEW)
        interval = self._pending_ttl_ms / 3000
        while self._claims:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for rkey, (_, since) in list(self._claims.items()):
                if now - since > self._max_claim_s:
                    log.warning("idempotency claim %r held over %gs: no longer renewed", rkey,
                                self._max_claim_s)  # fmt: skip
                    del self._claims[rkey]
            held = list(self._claims.items())
            if not held:
                break
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for rkey, (claim, _) in held:
                        await script(keys=[rkey], args=[claim, self._pending_ttl_ms], client=pipe)
                    kept = await pipe.execute()
            except Exception as exc:
                if not (isinstance(exc, OSError) or _is_redis_error(exc)):
                    raise
                log.warning("could not renew %d idempotency claims: %s", len(held), exc)
                continue  # Redis is down: try again next round; the claims may expire meanwhile
            for (rkey, (claim, _)), ok in zip(held, kept, strict=True):
                if not ok and self._claims.get(rkey, (b"", 0.0))[0] == claim:
                    log.warning("idempotency claim %r was lost while its request computed", rkey)
                    del self._claims[rkey]

    async def complete(self, key: str, digest: bytes, result: InferenceResult) -> None:
        self._claims.pop(self._prefix + key, None)
        value = self._pack(_DONE, digest, encode_result(result))
        try:
            await self._redis.set(self._prefix + key, value, px=self._ttl_ms)
        except Exception as exc:
            if _is_redis_error(exc):
                # The answer still goes to the caller; only replay protection is weakened.
                log.warning("could not store idempotent result for %r: %s", key, exc)
                return
            raise

    async def release(self, key: str) -> None:
        self._claims.pop(self._prefix + key, None)
        try:
            await self._redis.delete(self._prefix + key)
        except Exception as exc:
            if not _is_redis_error(exc):
                raise
            log.warning("could not release idempotency claim %r: %s", key, exc)

    async def close(self) -> None:
        self._claims.clear()
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
        await self._redis.aclose()


def _is_redis_error(exc: BaseException) -> bool:
    import redis.exceptions

    return isinstance(exc, redis.exceptions.RedisError)
