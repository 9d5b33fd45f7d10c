"""Metadata store against a real PostgreSQL 15: same schema as SQLite, and a stopped database
never blocks the request path."""

from __future__ import annotations

import asyncio

import pytest

from cloud.core import RequestRecord
from cloud.stores import (
    SCHEMA_VERSION,
    DeviceSeen,
    MetadataWriter,
    PostgresMetadataBackend,
    PriceTable,
    SessionEvent,
    SqliteMetadataBackend,
    metadata_backend,
)
from tests.integration._services import PostgresServer, database_url, postgres_server

__all__ = ["database_url", "postgres_server"]  # fixtures


def _req(i: int) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", device_id="d1", model_name="m", model_version="1", route="cloud",
        status="OK", deadline_ms=30.0, idempotency_key=f"k{i}", offload_reason="policy",
        codec="int8", top_class=i % 10, confidence=0.5, latency_ms=3.0, bytes_in=2000,
        bytes_out=40, compute_s=0.0015,
    )  # fmt: skip


async def test_postgres_schema_matches_sqlite(database_url: str, tmp_path: object) -> None:
    prices = PriceTable(per_gb_in=0.09, per_compute_hour=2.0)
    pg = metadata_backend(database_url, prices)
    assert isinstance(pg, PostgresMetadataBackend)
    assert await pg.migrate() == SCHEMA_VERSION
    assert await pg.migrate() == SCHEMA_VERSION
    lite = SqliteMetadataBackend(":memory:", prices)
    await lite.migrate()
    batch = [DeviceSeen("d1", "phone"), SessionEvent("s1", "d1", 1.0), _req(1), _req(1), _req(2)]
    for db in (pg, lite):
        await db.write(batch)
        await db.write([SessionEvent("s1", "d1", 1.0, ended_at=5.0, end_reason="closed")])
    for table in ("devices", "sessions", "requests", "results", "costs"):
        assert await pg.count(table) == await lite.count(table), table
    q = "SELECT route, api, status, deadline_ms, idempotency_key, offload_reason, codec FROM requests ORDER BY request_id"
    assert await pg.query(q) == await lite.query(q)
    q = "SELECT bytes_in, bytes_out, compute_ms, cost FROM costs ORDER BY request_id"
    assert await pg.query(q) == await lite.query(q)
    assert await pg.query("SELECT ended_at FROM sessions") == [(5.0,)]
    await pg.close()
    await lite.close()


async def test_writer_to_postgres(database_url: str) -> None:
    writer = MetadataWriter(
        PostgresMetadataBackend(database_url), max_batch=100, flush_interval_s=0.01
    )
    await writer.start()
    for i in range(250):
        writer.submit(_req(i))
    await writer.stop()
    assert writer.written == 250
    assert await writer.backend.count("requests") == 250
    await writer.backend.close()


async def test_stopped_postgres_never_blocks(
    postgres_server: PostgresServer, database_url: str
) -> None:
    url = database_url if postgres_server.owned else "postgresql://postgres@127.0.0.1:1/none"
    backend = PostgresMetadataBackend(url, connect_timeout_s=1.0)
    writer = MetadataWriter(
        backend, max_buffer=200, max_batch=50, flush_interval_s=0.01, write_timeout_s=1.0
    )
    await writer.start()
    writer.submit(_req(-1))
    await asyncio.sleep(0.3)
    if postgres_server.owned:
        postgres_server.stop()
    try:
        # The request path only calls submit: it must return at once however the database is.
        accepted = sum(writer.submit(_req(i)) for i in range(5000))
        assert accepted <= 250
        assert writer.dropped >= 5000 - accepted
        await asyncio.sleep(1.5)  # the flush task fails and drops batches meanwhile
        assert writer.failed_batches >= 1
        # Inference-like work on the same loop keeps running while the writer waits on the DB.
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0.005)
            ticks += 1
        assert ticks == 20
    finally:
        if postgres_server.owned:
            postgres_server.start()
    if postgres_server.owned:
        # Recovery: once the database is back, new records are written.
        before = writer.written
        for i in range(10):
            writer.submit(_req(10_000 + i))
        for _ in range(100):
            if writer.written >= before + 10:
                break
            await asyncio.sleep(0.1)
        assert writer.written >= before + 10
    await writer.stop(timeout_s=1.0)
    await backend.close()


@pytest.mark.parametrize("n", [2])
async def test_concurrent_migrations(database_url: str, n: int) -> None:
    backends = [PostgresMetadataBackend(database_url) for _ in range(n)]
    versions = await asyncio.gather(*(b.migrate() for b in backends))
    assert versions == [SCHEMA_VERSION] * n
    for b in backends:
        await b.close()
