"""Idempotency store and result cache against a real Redis shared by two "replicas"."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import numpy as np
import pytest
import redis.asyncio as aioredis

from cloud.core import CacheEntry, InferenceResult
from cloud.stores import (
    RedisIdempotencyStore,
    RedisResultCache,
    StoreSettings,
    build_stores,
)
from common.errors import FailedPrecondition, InvalidArgument, Unavailable
from tests.integration._services import RedisServer, redis_server, redis_url

__all__ = ["redis_server", "redis_url"]  # fixtures


def _prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def _result(payload: bytes) -> InferenceResult:
    return InferenceResult("m", "1", {"y": np.frombuffer(payload, np.uint8)[None]}, batch_size=1)


def _payload(result: InferenceResult) -> bytes:
    return result.outputs["y"].tobytes()


async def test_two_replicas_compute_once(redis_url: str) -> None:
    prefix = _prefix()
    # Two replicas: separate clients and stores, one Redis.
    replicas = [
        RedisIdempotencyStore(aioredis.Redis.from_url(redis_url), prefix=prefix) for _ in range(2)
    ]
    computed = 0

    async def serve(store: RedisIdempotencyStore, key: str, payload: bytes) -> bytes:
        nonlocal computed
        digest = _digest(payload)
        stored = await store.reserve(key, digest)
        if stored is not None:
            assert (stored.model_name, stored.model_version) == ("m", "1")
            return _payload(stored)
        computed += 1
        await asyncio.sleep(0.02)  # the backend call
        result = b"answer:" + payload
        await store.complete(key, digest, _result(result))
        return result

    # Sequential repeat on the other replica, then concurrent duplicates across both.
    assert await serve(replicas[0], "k1", b"p") == b"answer:p"
    assert await serve(replicas[1], "k1", b"p") == b"answer:p"
    results = await asyncio.gather(*(serve(replicas[i % 2], "k2", b"q") for i in range(8)))
    assert results == [b"answer:q"] * 8
    assert computed == 2
    with pytest.raises(FailedPrecondition, match="different payload"):
        await serve(replicas[1], "k1", b"changed")
    for s in replicas:
        await s.close()


async def test_release_and_ttl(redis_url: str) -> None:
    store = RedisIdempotencyStore(aioredis.Redis.from_url(redis_url), prefix=_prefix(), ttl_s=0.2)
    d = _digest(b"x")
    assert await store.reserve("k", d) is None
    await store.release("k")
    assert await store.reserve("k", d) is None
    await store.complete("k", d, _result(b"r"))
    stored = await store.reserve("k", d)
    assert stored is not None and _payload(stored) == b"r"
    await asyncio.sleep(0.3)
    assert await store.reserve("k", d) is None
    with pytest.raises(InvalidArgument):
        await store.reserve("k" * 321, d)  # 256 of the client's + the tenant namespace
    await store.close()


async def test_a_live_claim_is_renewed_and_a_dead_ones_expires(redis_url: str) -> None:
    """A request that queues or computes for longer than ``pending_ttl_s`` keeps its claim (it
    used to expire, letting another replica compute the key a second time); the claim of a
    replica that is gone expires after ``pending_ttl_s``."""
    prefix, raw = _prefix(), aioredis.Redis.from_url(redis_url)
    live = RedisIdempotencyStore(
        aioredis.Redis.from_url(redis_url), prefix=prefix, pending_ttl_s=0.6
    )
    other = RedisIdempotencyStore(
        aioredis.Redis.from_url(redis_url), prefix=prefix, wait_timeout_s=0.05
    )
    assert await live.reserve("slow", b"d") is None
    assert await live.reserve("gone", b"e") is None
    await live.release("gone")
    assert live.claims_held == 1
    await asyncio.sleep(1.8)  # three pending TTLs
    ttl = await raw.pttl(prefix + "slow")
    assert 0 < ttl <= 600, ttl
    with pytest.raises(Unavailable, match="still being computed"):
        await other.reserve("slow", b"d")  # still claimed: the other replica does not compute
    await live.complete("slow", b"d", _result(b"r"))
    assert live.claims_held == 0
    assert await raw.pttl(prefix + "slow") > 60_000  # the result's TTL, not the claim's
    stored = await other.reserve("slow", b"d")
    assert stored is not None and _payload(stored) == b"r"

    # A replica that dies holding a claim: nobody renews it, it expires, another computes.
    dead = RedisIdempotencyStore(
        aioredis.Redis.from_url(redis_url), prefix=prefix, pending_ttl_s=0.3
    )
    assert await dead.reserve("orphan", b"f") is None
    await dead.close()  # stops renewing, as a kill -9 would
    await asyncio.sleep(0.5)
    assert await raw.exists(prefix + "orphan") == 0
    assert await other.reserve("orphan", b"f") is None

    # A claim taken over (expired while Redis was unreachable, then claimed elsewhere) is not
    # extended for its old owner: the renewal only touches a value that is still its claim.
    assert await live.reserve("taken", b"g") is None
    await raw.set(prefix + "taken", b"someone else's claim", px=5000)
    await asyncio.sleep(1.0)  # five renewal rounds
    assert live.claims_held == 0
    assert 0 < await raw.pttl(prefix + "taken") <= 5000
    for store in (live, other):
        await store.close()
    await raw.aclose()


async def test_in_progress_duplicate_times_out_unavailable(redis_url: str) -> None:
    prefix = _prefix()
    a = RedisIdempotencyStore(aioredis.Redis.from_url(redis_url), prefix=prefix)
    b = RedisIdempotencyStore(aioredis.Redis.from_url(redis_url), prefix=prefix, wait_timeout_s=0.1)
    assert await a.reserve("k", b"d") is None
    with pytest.raises(Unavailable, match="still being computed"):
        await b.reserve("k", b"d")
    await a.close()
    await b.close()


async def test_result_cache_shared(redis_url: str) -> None:
    prefix = _prefix()
    c1 = RedisResultCache(aioredis.Redis.from_url(redis_url), prefix=prefix)
    c2 = RedisResultCache(aioredis.Redis.from_url(redis_url), prefix=prefix, default_ttl_s=0.2)
    h = hashlib.sha256(b"img").hexdigest()
    entry = CacheEntry(
        outputs={"logits": np.arange(10, dtype=np.float32)[None]},
        top_class=9,
        confidence=0.7,
        model_version="2",
    )
    assert await c2.get("m", h) is None
    await c1.put("m", h, entry)
    got = await c2.get("m", h)
    assert got is not None and got.top_class == 9 and got.model_version == "2"
    np.testing.assert_array_equal(got.outputs["logits"], entry.outputs["logits"])
    await c2.put("m", h, entry)  # default TTL of c2: 0.2 s
    await asyncio.sleep(0.3)
    assert await c1.get("m", h) is None
    await c1.close()
    await c2.close()


async def test_redis_down_is_unavailable_and_cache_misses(
    redis_server: RedisServer, redis_url: str
) -> None:
    if not redis_server.owned:
        redis_url = "redis://127.0.0.1:1/0"  # nothing listens there: the same as a stopped server
    else:
        redis_server.stop()
    try:
        store = RedisIdempotencyStore(
            aioredis.Redis.from_url(redis_url, socket_connect_timeout=0.5), prefix=_prefix()
        )
        with pytest.raises(Unavailable, match="unreachable"):
            await store.reserve("k", b"d")
        await store.complete("k", b"d", _result(b"r"))  # logged, not raised
        await store.release("k")
        cache = RedisResultCache(aioredis.Redis.from_url(redis_url, socket_connect_timeout=0.5))
        h = hashlib.sha256(b"").hexdigest()
        assert await cache.get("m", h) is None
        await cache.put("m", h, CacheEntry(outputs={}))
        await store.close()
        await cache.close()
    finally:
        if redis_server.owned:
            redis_server.start()


async def test_build_redis_stores(redis_url: str) -> None:
    stores = build_stores(StoreSettings(backend="redis", redis_url=redis_url, metadata_url="none"))
    assert isinstance(stores.idempotency, RedisIdempotencyStore)
    key = uuid.uuid4().hex
    assert await stores.idempotency.reserve(key, b"d") is None
    await stores.idempotency.complete(key, b"d", _result(b"ok"))
    stored = await stores.idempotency.reserve(key, b"d")
    assert stored is not None and _payload(stored) == b"ok"
    await stores.close()
