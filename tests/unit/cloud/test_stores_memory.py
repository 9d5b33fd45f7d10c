"""Memory stores, tensor framing, SQLite metadata and the batched writer."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest

from cloud.stores import (
    SCHEMA_VERSION,
    CacheEntry,
    DeviceSeen,
    MemoryIdempotencyStore,
    MemoryResultCache,
    MetadataWriter,
    PriceTable,
    RequestRecord,
    SessionEvent,
    SqliteMetadataBackend,
    StoreSettings,
    build_stores,
    decode_entry,
    decode_tensors,
    encode_entry,
    encode_tensors,
    payload_digest,
)
from common.errors import DataLoss, FailedPrecondition, InvalidArgument

H = hashlib.sha256(b"x").hexdigest()


def test_tensor_frame_round_trip() -> None:
    tensors = {
        "logits": np.arange(20, dtype=np.float32).reshape(2, 10),
        "ids": np.array([1, 2], np.int64),
    }
    out, meta = decode_tensors(encode_tensors(tensors, {"a": 1}))
    assert meta == {"a": 1}
    assert set(out) == {"logits", "ids"}
    np.testing.assert_array_equal(out["logits"], tensors["logits"])
    assert out["ids"].dtype == np.int64


def test_tensor_frame_rejects_corruption() -> None:
    frame = encode_tensors({"x": np.zeros((4, 4), np.float32)})
    with pytest.raises(DataLoss):
        decode_tensors(frame[:-8])
    with pytest.raises(DataLoss):
        decode_tensors(b"\xff\xff\xff\x00garbage")
    with pytest.raises(ValueError):
        encode_tensors({"x": np.array(["a"])})


async def test_memory_idempotency_returns_stored_result() -> None:
    store = MemoryIdempotencyStore()
    d = payload_digest(b"payload")
    first = await store.reserve("k1", d)
    assert first.result is None
    await store.complete("k1", d, b"answer")
    again = await store.reserve("k1", d)
    assert again.result == b"answer"
    with pytest.raises(FailedPrecondition, match="different payload"):
        await store.reserve("k1", payload_digest(b"other"))
    with pytest.raises(InvalidArgument):
        await store.reserve("", d)


async def test_memory_idempotency_concurrent_duplicate_waits_for_first() -> None:
    store = MemoryIdempotencyStore()
    d = payload_digest(b"p")
    calls = 0

    async def handle() -> bytes:
        nonlocal calls
        r = await store.reserve("k", d)
        if r.result is not None:
            return r.result
        calls += 1
        await asyncio.sleep(0.01)
        await store.complete("k", d, b"done")
        return b"done"

    results = await asyncio.gather(*(handle() for _ in range(5)))
    assert results == [b"done"] * 5
    assert calls == 1


async def test_memory_idempotency_release_allows_retry_and_ttl_expires() -> None:
    store = MemoryIdempotencyStore(ttl_s=0.05)
    d = payload_digest(b"p")
    assert (await store.reserve("k", d)).result is None
    await store.release("k")
    assert (await store.reserve("k", d)).result is None
    await store.complete("k", d, b"r")
    assert (await store.reserve("k", d)).result == b"r"
    await asyncio.sleep(0.08)
    assert (await store.reserve("k", d)).result is None  # expired: computes again


async def test_memory_idempotency_bounded() -> None:
    store = MemoryIdempotencyStore(max_keys=3)
    for i in range(10):
        await store.reserve(f"k{i}", "d")
        await store.complete(f"k{i}", "d", b"r")
    assert (await store.reserve("k9", "d")).result == b"r"
    assert (await store.reserve("k0", "d")).result is None  # evicted


async def test_memory_cache_get_put_ttl_and_lru() -> None:
    cache = MemoryResultCache(default_ttl_s=10, max_entries=2)
    entry = CacheEntry(
        outputs={"logits": np.ones((1, 3), np.float32)},
        top_class=2,
        confidence=0.9,
        model_version="1",
    )
    assert await cache.get("m", H) is None
    await cache.put("m", H, entry)
    got = await cache.get("m", H)
    assert got is not None and got.top_class == 2
    await cache.put("m", H, entry, ttl_s=0.01)
    await asyncio.sleep(0.03)
    assert await cache.get("m", H) is None
    for i in range(3):
        await cache.put("m", hashlib.sha256(bytes([i])).hexdigest(), entry)
    assert await cache.get("m", hashlib.sha256(b"\x00").hexdigest()) is None
    with pytest.raises(InvalidArgument, match="content_hash"):
        await cache.get("m", "not-a-hash")
    with pytest.raises(InvalidArgument, match="model_name"):
        await cache.put("", H, entry)


def test_cache_entry_round_trip() -> None:
    entry = CacheEntry(
        outputs={"y": np.eye(3, dtype=np.float32)}, top_class=1, confidence=0.5, model_version="v2"
    )
    back = decode_entry(encode_entry(entry))
    assert (back.top_class, back.confidence, back.model_version) == (1, 0.5, "v2")
    np.testing.assert_array_equal(back.outputs["y"], entry.outputs["y"])


def _request(i: int, **kw: object) -> RequestRecord:
    base: dict[str, object] = dict(
        request_id=f"r{i}", device_id="dev1", model_name="m", model_version="1", route="cloud",
        status="OK", deadline_ms=50.0, idempotency_key=f"k{i}", offload_reason="low_confidence",
        codec="int8+ans", top_class=3, confidence=0.8, latency_ms=4.0, bytes_in=1_000_000,
        bytes_out=100, compute_ms=2.0,
    )  # fmt: skip
    base.update(kw)
    return RequestRecord(**base)  # type: ignore[arg-type]


async def test_sqlite_migrations_and_writes(tmp_path: Path) -> None:
    prices = PriceTable(per_gb_in=1.0, per_gb_out=0.0, per_compute_hour=3600.0)
    db = SqliteMetadataBackend(tmp_path / "m.sqlite3", prices)
    assert await db.migrate() == SCHEMA_VERSION
    assert await db.migrate() == SCHEMA_VERSION  # idempotent
    await db.write([
        DeviceSeen("dev1", "phone"),
        SessionEvent("s1", "dev1", started_at=1.0),
        _request(1),
        _request(1),  # duplicate request id: written once
        _request(2, top_class=None, latency_ms=None),
    ])  # fmt: skip
    await db.write(
        [
            DeviceSeen("dev1", "phone"),
            SessionEvent("s1", "dev1", 1.0, ended_at=2.0, end_reason="drain"),
        ]
    )
    assert await db.count("devices") == 1
    assert await db.count("requests") == 2
    assert await db.count("results") == 1
    assert await db.count("costs") == 2
    rows = await db.query("SELECT ended_at, end_reason FROM sessions")
    assert rows == [(2.0, "drain")]
    (cost,) = (await db.query("SELECT cost FROM costs WHERE request_id = ?", ("r1",)))[0]
    assert cost == pytest.approx(1e6 / 1e9 * 1.0 + 2.0 / 3.6e6 * 3600.0)
    (route, codec, reason) = (
        await db.query("SELECT route, codec, offload_reason FROM requests WHERE request_id='r1'")
    )[0]
    assert (route, codec, reason) == ("cloud", "int8+ans", "low_confidence")
    with pytest.raises(ValueError):
        await db.count("sqlite_master")
    await db.close()


async def test_writer_batches_and_flushes_on_stop(tmp_path: Path) -> None:
    db = SqliteMetadataBackend(tmp_path / "w.sqlite3")
    writer = MetadataWriter(db, max_buffer=1000, max_batch=50, flush_interval_s=0.01)
    await writer.start()
    for i in range(120):
        assert writer.submit(_request(i))
    await writer.stop()
    assert writer.written == 120 and writer.dropped == 0
    assert await db.count("requests") == 120
    assert not writer.submit(_request(999))  # stopped: dropped, counted
    assert writer.dropped == 1
    await db.close()


class _StuckBackend:
    """A database that never answers: writes hang until cancelled."""

    def __init__(self) -> None:
        self.calls = 0

    async def migrate(self) -> int:
        return 1

    async def write(self, records: list[object]) -> None:
        self.calls += 1
        await asyncio.Event().wait()

    async def count(self, table: str) -> int:
        return 0

    async def close(self) -> None:
        return None


async def test_writer_never_blocks_on_a_stuck_database() -> None:
    backend = _StuckBackend()
    writer = MetadataWriter(
        backend, max_buffer=100, max_batch=10, flush_interval_s=0.01, write_timeout_s=0.05
    )  # type: ignore[arg-type]
    await writer.start()
    accepted = sum(writer.submit(_request(i)) for i in range(1000))
    # submit is synchronous and bounded: at most the buffer (plus a batch in flight) is kept.
    assert accepted <= 110
    assert writer.dropped == 1000 - accepted
    await asyncio.sleep(0.2)
    assert backend.calls >= 1 and writer.failed_batches >= 1
    await writer.stop(timeout_s=0.1)
    assert writer.buffered == 0


def test_settings_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIML021_STORES_BACKEND", "redis")
    with pytest.raises(ValueError, match="AIML021_STORES_REDIS_URL"):
        StoreSettings()
    monkeypatch.delenv("AIML021_STORES_BACKEND")
    monkeypatch.setenv("AIML021_STORES_METADATA_URL", "mysql://x")
    with pytest.raises(ValueError, match="AIML021_STORES_METADATA_URL"):
        StoreSettings()
    monkeypatch.setenv("AIML021_STORES_METADATA_URL", "none")
    monkeypatch.setenv("AIML021_STORES_PRICES__PER_GB_IN", "0.09")
    s = StoreSettings()
    assert s.prices.per_gb_in == 0.09


async def test_build_default_stores(tmp_path: Path) -> None:
    stores = build_stores(StoreSettings(metadata_url=f"sqlite:///{tmp_path}/d.sqlite3"))
    assert isinstance(stores.idempotency, MemoryIdempotencyStore)
    await stores.start()
    assert stores.metadata is not None
    stores.metadata.submit(DeviceSeen("d"))
    await stores.close()
    db = SqliteMetadataBackend(tmp_path / "d.sqlite3")
    assert await db.count("devices") == 1
    await db.close()
