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
from cloud._privacy_forget import (
    TOMBSTONES,
    cache_owner_key,
    cache_prefix,
    forget_device,
    idempotency_prefix,
)
from cloud._privacy_keys import reseal
from cloud.core import (
    CacheEntry,
    InferenceResult,
    OrgScopedCache,
    Principal,
    RequestRecord,
    Role,
    acting_as,
)
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
from cloud.stores._sealed_rows import RowSealer
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
        keys = client.scan_iter(match=pattern, _type="string")  # not the owner sets
        return {k: await client.get(k) async for k in keys}
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
    # Only this test's keys: a shared Redis (REDIS_URL) holds other tests' unsealed stores.
    raw = await _raw_values(redis_url, f"aiml021:idem:{key}") | await _raw_values(
        redis_url, f"aiml021:cache:o:x/m:1:{content}"
    )
    assert len(raw) == 2 and all(is_sealed(v) for v in raw.values())
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
    rows = await db.query(
        "SELECT device_id, idempotency_key FROM requests WHERE request_id = ?", (P.request("r0"),)
    )
    # Idempotency keys are ids: their keyed pseudonyms, not DLP-redacted text.
    assert rows == [(P.device("cam-1"), P.idempotency("order 0: call +44 20 7946 0958"))]
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
    await client.delete(other)  # a clear value: not left for the sealed-values test to meet
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


async def test_postgres_rows_and_redis_values_are_resealed_under_the_new_key(
    database_url: str, redis_url: str
) -> None:
    """Rotation against the real stores: everything sealed under k1 (PostgreSQL rows, Redis
    idempotency and cache values) is readable under k1+k2, moves to k2 with reseal, and opens
    once k1 is retired; tampered and clear rows are named, never rewritten."""
    old = KeyRing.generate("k1")
    db = PostgresMetadataBackend(database_url, keyring=old)
    writer = MetadataWriter(db, flush_interval_s=0.01)
    sink = PrivacySink(writer, P, None)
    await writer.start()
    for i in range(4):
        sink(
            RequestRecord(
                request_id=f"r{i}", device_id="cam-1", model_name="m", model_version="1",
                route="cloud", status="OK", top_class=i, confidence=0.5, latency_ms=2.0,
                idempotency_key=f"order {i} of Jane Roe",
            )
        )  # fmt: skip
    await writer.stop()
    dump = str(await db.query("SELECT * FROM requests")) + str(
        await db.query("SELECT * FROM results")
    )
    assert "Jane Roe" not in dump and "order" not in dump
    assert await db.query("SELECT DISTINCT top_class FROM results") == [(None,)]
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(redis_url)
    cache = RedisResultCache(SealedRedis(client, old), prefix=prefix + "cache:")
    content = hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    await cache.put("m", content, CacheEntry.of(_result(0.3)), ttl_s=600)
    new = old.rotated("k2")
    census = await reseal(new, metadata_url=database_url, redis_client=client,
                          redis_prefixes=(prefix,), dry_run=True)  # fmt: skip
    assert census.key_ids == {"k1": 9} and not census.resealed  # 4 requests, 4 results, 1 value
    # Abuse on the real database: one row's seal tampered with, one clear row injected.
    rows = await db.query("SELECT request_id, sealed FROM requests ORDER BY request_id")
    bad = rows[0][1][:-4] + ("AAA=" if not rows[0][1].endswith("AAA=") else "BBB=")
    import psycopg

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        await conn.execute(
            "UPDATE requests SET sealed = %s WHERE request_id = %s", (bad, rows[0][0])
        )
        await conn.execute(
            "INSERT INTO requests (device_id, request_id, model_name, model_version, route, "
            "status, idempotency_key, received_at) VALUES ('cam-x', 'x1', 'm', '1', 'cloud', "
            "'OK', 'planted', 0)"
        )
        await conn.commit()
    report = await reseal(new, metadata_url=database_url, redis_client=client,
                          redis_prefixes=(prefix,))  # fmt: skip
    assert report.resealed == {"requests": 3, "results": 4, "redis": 1}
    assert len(report.unreadable) == 2
    assert any("requests row (cam-x, x1) is not sealed" in u for u in report.unreadable)
    assert any(f"({P.device('cam-1')}, {rows[0][0]})" in u for u in report.unreadable)
    assert report.key_ids == {"k2": 8}
    # Nothing left under k1 but the tampered row: k1 retires, and k2 alone opens every row.
    retired = new.without("k1")
    sealer = RowSealer(retired)
    for device, request, sealed in await db.query(
        "SELECT device_id, request_id, sealed FROM results"
    ):
        assert sealer.open("results", (device, request), sealed, {})["top_class"] in range(4)
    ttl = await client.pttl(f"{prefix}cache:m:{content}")
    assert 0 < ttl <= 600_000  # the compare-and-set kept the entry's TTL
    reader = RedisResultCache(SealedRedis(client, retired), prefix=prefix + "cache:")
    entry = await reader.get("m", content)
    assert entry is not None and float(entry.outputs["y"][0, 0]) == pytest.approx(0.3)
    await client.aclose()
    await db.close()


async def test_forget_erases_the_devices_entries_in_a_cache_its_org_shares(
    redis_url: str,
) -> None:
    org = f"org-{uuid.uuid4().hex[:8]}"
    cam1 = Principal("cam-1", Role.DEVICE, org, device_id="cam-1")
    cam2 = Principal("cam-2", Role.DEVICE, org, device_id="cam-2")
    ring = KeyRing.generate("k1")
    cache = OrgScopedCache(RedisResultCache(SealedRedis(aioredis.Redis.from_url(redis_url), ring)))
    x, y, z = (hashlib.sha256(uuid.uuid4().bytes).hexdigest() for _ in range(3))
    with acting_as(cam1):
        await cache.put("m:1", x, CacheEntry.of(_result(0.1)))
    with acting_as(cam2):
        await cache.put("m:1", y, CacheEntry.of(_result(0.2)))
        await cache.put("m:1", z, CacheEntry.of(_result(0.3)))
        assert await cache.get("m:1", x) is not None  # cam-2 sent cam-1's content too
    client = aioredis.Redis.from_url(redis_url)
    assert await client.pttl(cache_owner_key(org, "cam-1")) > 0  # the index expires too
    report = await forget_device("cam-1", metadata_url=None, redis_client=client, org=org)
    assert report.redis == {"idempotency": 0, "cache": 1}
    with acting_as(cam2):
        assert await cache.get("m:1", x) is None  # cam-1's answer is gone for everyone
        assert await cache.get("m:1", y) is not None and await cache.get("m:1", z) is not None
    assert not await client.exists(cache_owner_key(org, "cam-1"))
    # cam-1 carries on; cam-2 computes x again and cam-1 reads it: a new entry, noted again
    # (the cache remembers whom it noted per entry, not per key).
    with acting_as(cam2):
        await cache.put("m:1", x, CacheEntry.of(_result(0.1)))
    with acting_as(cam1):
        assert await cache.get("m:1", x) is not None
    report = await forget_device("cam-1", metadata_url=None, redis_client=client, org=org)
    assert report.redis == {"idempotency": 0, "cache": 1}
    report = await forget_device("cam-2", metadata_url=None, redis_client=client, org=org)
    assert report.redis == {"idempotency": 0, "cache": 2}  # x was already gone
    assert [k async for k in client.scan_iter(match=cache_prefix(org) + "*")] == []
    # Results private to a device (authz.private_results) carry it in their key.
    private = OrgScopedCache(
        RedisResultCache(SealedRedis(aioredis.Redis.from_url(redis_url), ring)), per_principal=True
    )
    with acting_as(cam1):
        await private.put("m:1", x, CacheEntry.of(_result(0.1)))
    with acting_as(cam2):
        await private.put("m:1", x, CacheEntry.of(_result(0.1)))
    report = await forget_device("cam-1", metadata_url=None, redis_client=client, org=org)
    assert report.redis["cache"] == 1
    with acting_as(cam2):
        assert await private.get("m:1", x) is not None
    await client.aclose()
    await cache.close()
    await private.close()
