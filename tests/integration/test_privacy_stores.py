"""Privacy controls against real stores: values sealed at rest in a real Redis (rotation, moved
and foreign values), pseudonymised metadata in a real PostgreSQL, and ``forget`` erasing a device
from both with a tombstone."""

from __future__ import annotations

import hashlib
import uuid

import numpy as np
import pytest
import redis.asyncio as aioredis

from cloud._privacy import GatewayPrivacySettings, PrivacySink
from cloud._privacy_forget import TOMBSTONES, forget_device, idempotency_prefix
from cloud.core import CacheEntry, InferenceResult, RequestRecord
from cloud.stores import (
    DeviceSeen,
    MetadataWriter,
    PostgresMetadataBackend,
    RedisIdempotencyStore,
    RedisResultCache,
    SealedRedis,
    StoreSettings,
    audit_backend,
    build_stores,
    verify,
)
from common.errors import DataLoss
from common.privacy import KeyRing, Pseudonymiser, is_sealed
from tests.integration._services import (
    database_url,
    postgres_server,
    redis_server,
    redis_url,
)

__all__ = ["database_url", "postgres_server", "redis_server", "redis_url"]  # fixtures

KEY = "22" * 32
P = Pseudonymiser.from_text(KEY)


def _result(value: float) -> InferenceResult:
    return InferenceResult(
        "m", "1", {"y": np.array([[value, 1 - value]], np.float32)}, batch_size=1
    )


async def _raw_values(url: str, pattern: str) -> dict[bytes, bytes]:
    client = aioredis.Redis.from_url(url)
    try:
        return {k: await client.get(k) async for k in client.scan_iter(match=pattern)}
    finally:
        await client.aclose()


async def test_redis_stores_keep_only_sealed_values(redis_url: str, tmp_path: object) -> None:
    ring = KeyRing.generate("k1")
    stores = build_stores(StoreSettings(backend="redis", redis_url=redis_url), keyring=ring)
    digest = hashlib.sha256(b"x").digest()
    key = f"p:{uuid.uuid4().hex}/order-1"
    assert await stores.idempotency.reserve(key, digest) is None
    await stores.idempotency.complete(key, digest, _result(0.25))
    entry = CacheEntry.of(_result(0.75))
    content = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    await stores.cache.put("o:x/m:1", content, entry)
    raw = await _raw_values(redis_url, "aiml021:*")
    assert raw and all(is_sealed(v) for v in raw.values())
    assert all(b'"tensors"' not in v and b"done" not in v for v in raw.values())
    # Both stores read their own values back through the seal.
    stored = await stores.idempotency.reserve(key, digest)
    assert stored is not None and float(stored.outputs["y"][0, 0]) == 0.25
    cached = await stores.cache.get("o:x/m:1", content)
    assert cached is not None and float(cached.outputs["y"][0, 0]) == 0.75
    await stores.close()


async def test_rotation_keeps_old_values_readable_and_new_ones_under_the_new_key(
    redis_url: str,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    old = KeyRing.generate("k1")
    digest = hashlib.sha256(b"y").digest()
    first = RedisIdempotencyStore(
        SealedRedis(aioredis.Redis.from_url(redis_url), old), prefix=prefix
    )
    await first.reserve("a", digest)
    await first.complete("a", digest, _result(0.5))
    await first.close()
    new = old.rotated("k2")
    second = RedisIdempotencyStore(
        SealedRedis(aioredis.Redis.from_url(redis_url), new), prefix=prefix
    )
    stored = await second.reserve("a", digest)
    assert stored is not None and float(stored.outputs["y"][0, 0]) == 0.5  # sealed under k1
    await second.reserve("b", digest)
    await second.complete("b", digest, _result(0.1))
    raw = await _raw_values(redis_url, prefix + "*")
    assert {new.key_id_of(v) for v in raw.values()} == {"k1", "k2"}
    await second.close()
    # A ring that retired k1 refuses the old value instead of misreading it.
    retired = RedisIdempotencyStore(
        SealedRedis(aioredis.Redis.from_url(redis_url), new.without("k1")), prefix=prefix
    )
    with pytest.raises(DataLoss, match="no longer holds"):
        await retired.reserve("a", digest)
    await retired.close()


async def test_a_value_moved_to_another_key_or_written_in_the_clear_is_refused(
    redis_url: str,
) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    ring = KeyRing.generate("k1")
    cache = RedisResultCache(SealedRedis(aioredis.Redis.from_url(redis_url), ring), prefix=prefix)
    a, b = (hashlib.sha256(s).hexdigest() for s in (b"a", b"b"))
    await cache.put("m", a, CacheEntry.of(_result(0.9)))
    plain = aioredis.Redis.from_url(redis_url)
    # Someone with write access to Redis copies device A's answer under device B's key.
    await plain.set(f"{prefix}m:{b}", await plain.get(f"{prefix}m:{a}"))
    with pytest.raises(DataLoss, match="authentication"):
        await cache.get("m", b)
    await plain.set(f"{prefix}m:{b}", b'{"forged": true}')
    with pytest.raises(DataLoss, match="not sealed"):
        await cache.get("m", b)
    await plain.aclose()
    await cache.close()


async def test_postgres_keeps_pseudonyms_and_forget_erases_a_device(
    database_url: str, redis_url: str
) -> None:
    settings = GatewayPrivacySettings(pseudonym_key=KEY)
    db = PostgresMetadataBackend(database_url)
    writer = MetadataWriter(db, flush_interval_s=0.01)
    sink = PrivacySink(writer, settings.pseudonymiser(), settings.redactor())
    await writer.start()
    sink(DeviceSeen("cam-1", "cpu"))
    for i, device in enumerate(["cam-1", "cam-1", "cam-2"]):
        sink(
            RequestRecord(
                request_id=f"r{i}", device_id=device, model_name="m", model_version="1",
                route="cloud", status="OK", top_class=1, latency_ms=2.0,
                idempotency_key=f"order {i}: call +44 20 7946 0958",
            )
        )  # fmt: skip
    await writer.stop()
    rows = await db.query("SELECT device_id, idempotency_key FROM requests ORDER BY request_id")
    assert rows[0] == (P.device("cam-1"), "order 0: call [PHONE]")
    assert "cam-1" not in str(rows)
    # The device's idempotency entries in Redis, namespaced by org and device, go too.
    client = aioredis.Redis.from_url(redis_url)
    mine = idempotency_prefix("acme", "cam-1") + "order-7"
    other = idempotency_prefix("acme", "cam-2") + "order-7"
    await client.set(mine, b"x")
    await client.set(other, b"y")
    report = await forget_device(
        "cam-1", metadata_url=database_url, redis_url=redis_url, org="acme", pseudonymiser=P,
        actor="ticket-9",
    )  # fmt: skip
    assert report.rows["requests"] == 2 and report.rows["results"] == 2
    assert report.rows["devices"] == 1 and report.redis_keys == 1
    assert await client.get(mine) is None and await client.get(other) == b"y"
    await client.aclose()
    left = await db.query("SELECT device_id FROM requests")
    assert left == [(P.device("cam-2"),)]
    stones = await db.query(f"SELECT subject, actor, detail FROM {TOMBSTONES}")
    assert len(stones) == 1 and stones[0][0] == P.device("cam-1") and stones[0][1] == "ticket-9"
    assert "cam-1" not in str(stones)
    audit = audit_backend(database_url)
    events = [r for r in await audit.rows() if r.action == "privacy.forget"]
    assert len(events) == 1 and events[0].resource == P.device("cam-1")
    assert (await verify(audit)).ok
    await audit.close()
    await db.close()
