"""The audit trail on a real PostgreSQL 15: the same chain as on SQLite, appends from several
writers at once (replicas) stay one unbroken chain, and tampering is found."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import psycopg
import pytest
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc

from cloud import Gateway
from cloud.core import AuditEvent
from cloud.stores import AuditFilter, PostgresAuditBackend, audit_log, verify
from common.cli import main
from tests.integration._services import database_url, postgres_server
from tests.support.authz import AuthzWorld
from tests.support.gateway import gateway_models, gateway_settings

__all__ = ["database_url", "postgres_server"]  # fixtures

KEY = b"p" * 32


def _event(i: int, who: str) -> AuditEvent:
    # Management actions (never coalesced, unlike a flood of refusals)
    return AuditEvent(who, "Admin", "acme", "/x.Y/Unload", "m", "OK", f"#{i}")


async def test_concurrent_writers_make_one_chain_and_tampering_is_found(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = [audit_log(database_url, key=KEY) for _ in range(3)]
    for log in logs:
        await log.start()
    for round_ in range(5):  # three replicas appending at once, five times
        for n, log in enumerate(logs):
            for i in range(4):
                log(_event(round_ * 100 + i, f"dev-{n}"))
        await asyncio.gather(*(log.flush() for log in logs))
    for log in logs:
        await log.stop()
    assert sum(log.written for log in logs) == 60
    db = PostgresAuditBackend(database_url)
    verdict = await verify(db, KEY)
    assert verdict.ok and verdict.rows == 60, verdict
    rows = await db.rows(AuditFilter(principal="dev-1"))
    assert len(rows) == 20 and {r.principal for r in rows} == {"dev-1"}

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("UPDATE audit_log SET outcome = 'PERMISSION_DENIED' WHERE seq = 17")
    verdict = await verify(db, KEY)
    assert not verdict.ok and verdict.bad_seq == 17 and "altered" in verdict.problem
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("DELETE FROM audit_log WHERE seq >= 17")
    verdict = await verify(db, KEY)
    assert not verdict.ok and "removed from the end" in verdict.problem
    # The CLI says the same (it runs its own event loop: from a thread).
    capsys.readouterr()
    assert await asyncio.to_thread(main, ["audit", "verify", "--db", database_url]) == 1
    assert "BROKEN" in capsys.readouterr().out


async def test_a_gateway_writes_its_audit_trail_into_its_metadata_database(
    database_url: str, tmp_path: Path
) -> None:
    """The wiring ``aiml021 serve`` uses: stores from settings, the audit log in the same
    PostgreSQL as the request records; a refused management call lands there."""
    world = AuthzWorld(tmp_path / "authz")
    settings = gateway_settings(
        gateway_models(tmp_path / "models"),
        authz=world.authz_section(),
        stores={"metadata_url": database_url},
    )
    observer = world.client("obs-1", "Observer", "acme")
    async with Gateway.from_settings(settings) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = deploy_pb2_grpc.DeployServiceStub(channel)
            request = deploy_pb2.SetRolloutRequest(rollout=deploy_pb2.Rollout(model_name="m"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.SetRollout(request, metadata=observer.metadata())
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    db = PostgresAuditBackend(database_url)
    [row] = await db.rows(AuditFilter(principal="obs-1"))
    assert (row.role, row.org, row.resource, row.outcome) == (
        "Observer",
        "acme",
        "m",
        "PERMISSION_DENIED",
    )
    assert row.action == "/aiml021.deploy.v1.DeployService/SetRollout"
    assert (await verify(db)).ok
