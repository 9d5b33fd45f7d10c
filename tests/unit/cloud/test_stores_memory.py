"""Memory stores, tensor framing, SQLite metadata and the batched writer."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from cloud.core import CacheEntry, InferenceResult, RequestRecord, TelemetryEvent
from cloud.stores import (
    MIGRATIONS,
    SCHEMA_VERSION,
    DeviceSeen,
    MemoryIdempotencyStore,
    MemoryResultCache,
    MetadataWriter,
    PriceTable,
    SessionEvent,
    SqliteMetadataBackend,
    StoreSettings,
    build_stores,
    decode_entry,
    decode_result,
    decode_tensors,
    encode_entry,
    encode_result,
    encode_tensors,
)
from common.errors import DataLoss, FailedPrecondition, InvalidArgument

H = hashlib.sha256(b"x").hexdigest()


def _digest(payload: bytes) -> bytes:
    return hashlib.sha256(payload).digest()


def _result(tag: float) -> InferenceResult:
    return InferenceResult("m", "1", {"y": np.full((1, 2), tag, np.float32)})


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


def test_result_frame_round_trip() -> None:
    result = InferenceResult("m", "2", {"y": np.eye(2, dtype=np.float32)}, batch_size=2)
    back = decode_result(encode_result(result))
    assert (back.model_name, back.model_version, back.batch_size) == ("m", "2", 2)
    np.testing.assert_array_equal(back.outputs["y"], result.outputs["y"])


async def test_memory_idempotency_returns_stored_result() -> None:
    store = MemoryIdempotencyStore()
    d = _digest(b"payload")
    assert await store.reserve("k1", d) is None
    answer = _result(1.0)
    await store.complete("k1", d, answer)
    assert await store.reserve("k1", d) is answer
    with pytest.raises(FailedPrecondition, match="different payload"):
        await store.reserve("k1", _digest(b"other"))
    with pytest.raises(InvalidArgument):
        await store.reserve("", d)
    with pytest.raises(InvalidArgument):
        await store.reserve("k" * 321, d)  # 256 of the client's + the tenant namespace


async def test_memory_idempotency_concurrent_duplicate_waits_for_first() -> None:
    store = MemoryIdempotencyStore()
    d = _digest(b"p")
    done = _result(2.0)
    calls = 0

    async def handle() -> InferenceResult:
        nonlocal calls
        r = await store.reserve("k", d)
        if r is not None:
            return r
        calls += 1
        await asyncio.sleep(0.01)
        await store.complete("k", d, done)
        return done

    results = await asyncio.gather(*(handle() for _ in range(5)))
    assert all(r is done for r in results)
    assert calls == 1


async def test_memory_idempotency_claim_of_a_crashed_owner_expires() -> None:
    store = MemoryIdempotencyStore(pending_ttl_s=0.05)
    d = _digest(b"p")
    assert await store.reserve("k", d) is None  # the owner never completes nor releases
    assert await asyncio.wait_for(store.reserve("k", d), 1.0) is None  # waited, then claimed


async def test_memory_idempotency_release_allows_retry_and_ttl_expires() -> None:
    store = MemoryIdempotencyStore(ttl_s=0.05)
    d = _digest(b"p")
    assert await store.reserve("k", d) is None
    await store.release("k")
    assert await store.reserve("k", d) is None
    r = _result(3.0)
    await store.complete("k", d, r)
    assert await store.reserve("k", d) is r
    await asyncio.sleep(0.08)
    assert await store.reserve("k", d) is None  # expired: computes again


async def test_memory_idempotency_bounded() -> None:
    store = MemoryIdempotencyStore(max_keys=3)
    r = _result(4.0)
    for i in range(10):
        await store.reserve(f"k{i}", b"d")
        await store.complete(f"k{i}", b"d", r)
    assert len(store) == 3
    assert await store.reserve("k9", b"d") is r
    assert await store.reserve("k0", b"d") is None  # evicted


async def test_memory_idempotency_never_evicts_a_claim_being_computed() -> None:
    store = MemoryIdempotencyStore(max_keys=2)
    assert await store.reserve("busy", b"d") is None
    for i in range(5):
        await store.reserve(f"k{i}", b"d")
        await store.complete(f"k{i}", b"d", _result(float(i)))
    waiter = asyncio.create_task(store.reserve("busy", b"d"))
    await asyncio.sleep(0.01)
    assert not waiter.done()  # still claimed: the duplicate waits for the owner
    done = _result(9.0)
    await store.complete("busy", b"d", done)
    assert await waiter is done


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
        bytes_out=100, compute_s=0.002,
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


async def test_migration_2_moves_the_api_out_of_route(tmp_path: Path) -> None:
    """Rows written at schema 1 held the API (infer, session...) in ``route``; after migration 2
    ``route`` is only where the request was answered and the API has its own column."""
    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION)"
    )
    for stmt in MIGRATIONS[0][1]:
        conn.execute(stmt)
    conn.execute("INSERT INTO schema_migrations VALUES (1, 0.0)")
    for rid, route in (("g", "session"), ("d", "edge"), ("c", "cache")):
        conn.execute(
            "INSERT INTO requests (device_id, request_id, model_name, model_version, route, "
            "status, received_at) VALUES ('dev', ?, 'm', '1', ?, 'OK', 0.0)",
            (rid, route),
        )
    conn.commit()
    conn.close()
    db = SqliteMetadataBackend(path)
    assert await db.migrate() == SCHEMA_VERSION
    rows = await db.query("SELECT request_id, route, api FROM requests ORDER BY request_id")
    assert rows == [("c", "cache", ""), ("d", "edge", ""), ("g", "cloud", "session")]
    await db.close()


async def test_writer_is_the_metadata_and_telemetry_sink(tmp_path: Path) -> None:
    db = SqliteMetadataBackend(tmp_path / "s.sqlite3")
    writer = MetadataWriter(db, flush_interval_s=0.01)
    await writer.start()
    writer(_request(1, route="cache", api="session", cached=True))  # the result cache answered
    writer(TelemetryEvent("dev1", "e1", "m", "edge", 0, 0.01, 10, 20, confidence=0.7))
    writer(TelemetryEvent("dev1"))  # a device event without a request id is not recorded
    await writer.stop()
    assert writer.written == 2 and writer.dropped == 0
    rows = await db.query(
        "SELECT q.request_id, q.route, q.model_version, q.status, r.confidence, r.latency_ms, "
        "c.bytes_in, c.bytes_out, c.compute_ms FROM requests q "
        "JOIN results r USING (device_id, request_id) JOIN costs c USING (device_id, request_id) "
        "ORDER BY q.request_id"
    )
    assert rows == [
        ("e1", "edge", "", "OK", 0.7, 10.0, 10, 20, 0.0),
        ("r1", "cache", "1", "OK", 0.8, 4.0, 1_000_000, 100, 2.0),
    ]
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
    from cloud._settings import GatewaySettings

    with pytest.raises(ValueError, match=r"stores\.redis_url"):
        StoreSettings(backend="redis")
    with pytest.raises(ValueError, match=r"stores\.metadata_url"):
        StoreSettings(metadata_url="mysql://x")
    monkeypatch.setenv("AIML021_GATEWAY_STORES__BACKEND", "redis")
    with pytest.raises(ValueError, match=r"stores\.redis_url"):
        GatewaySettings()
    monkeypatch.delenv("AIML021_GATEWAY_STORES__BACKEND")
    monkeypatch.setenv("AIML021_GATEWAY_STORES__METADATA_URL", "none")
    monkeypatch.setenv("AIML021_GATEWAY_STORES__PRICES__PER_GB_IN", "0.09")
    s = GatewaySettings().stores
    assert (s.metadata_url, s.prices.per_gb_in) == ("none", 0.09)


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
