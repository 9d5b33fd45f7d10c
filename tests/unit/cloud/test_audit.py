"""The hash-chained audit trail in SQLite: appends chain, ``verify`` finds an edited, deleted or
reordered row and rows cut off the end; ``aiml021 audit verify|query`` say so."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from cloud.core import AuditEvent
from cloud.stores import (
    MIGRATIONS,
    AuditFilter,
    SqliteAuditBackend,
    audit_log,
    verify,
    verify_chain,
)
from cloud.stores._audit import GENESIS, chain
from common.cli import main

KEY = b"k" * 32


def _events(n: int) -> list[AuditEvent]:
    principals = ["dev-a", "dev-b", "op-1"]
    return [
        AuditEvent(
            principal=principals[i % 3],
            role="Device" if i % 3 < 2 else "Operator",
            org="acme" if i % 2 else "globex",
            action="/aiml021.cache.v1.CacheService/Put" if i % 3 < 2 else "POST /v1/deploy/canary",
            resource="m",
            outcome="PERMISSION_DENIED" if i % 3 < 2 else "OK",
            detail=f"event {i}",
            at=1_800_000_000.0 + i,
        )
        for i in range(n)
    ]


async def _filled(path: Path, n: int = 12, key: bytes | None = KEY) -> SqliteAuditBackend:
    log = audit_log(f"sqlite:///{path}", key=key)
    await log.start()
    for e in _events(n):
        log(e)
    await log.stop()
    assert log.written == n and log.dropped == 0
    return SqliteAuditBackend(path)


def _sql(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path)
    for stmt in statements:
        conn.execute(stmt)
    conn.commit()
    conn.close()


def test_the_audit_tables_are_a_metadata_migration() -> None:
    versions = [v for v, _ in MIGRATIONS]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert any("CREATE TABLE audit_log" in stmt for _, stmts in MIGRATIONS for stmt in stmts)


def test_chain_links_every_row_to_the_previous_one() -> None:
    rows = chain(_events(3), 0, GENESIS, None)
    assert [r.seq for r in rows] == [1, 2, 3]
    assert rows[0].prev_hash == GENESIS
    assert rows[1].prev_hash == rows[0].hash and rows[2].prev_hash == rows[1].hash
    assert verify_chain(rows).ok
    assert not verify_chain(rows, key=KEY).ok  # a keyed chain needs its key, and vice versa


async def test_an_intact_chain_verifies(tmp_path: Path) -> None:
    db = await _filled(tmp_path / "meta.sqlite3")
    verdict = await verify(db, KEY)
    assert verdict.ok and verdict.rows == 12
    # Appends from a second writer (another replica) continue the same chain.
    log = audit_log(f"sqlite:///{tmp_path / 'meta.sqlite3'}", key=KEY)
    await log.start()
    log(_events(1)[0])
    await log.stop()
    assert (await verify(db, KEY)).rows == 13
    await db.close()


@pytest.mark.parametrize(
    ("tamper", "problem", "bad"),
    [
        ("UPDATE audit_log SET outcome = 'OK' WHERE seq = 5", "altered", 5),
        ("UPDATE audit_log SET principal = 'someone' WHERE seq = 1", "altered", 1),
        ("DELETE FROM audit_log WHERE seq = 7", "missing", 8),
        ("UPDATE audit_log SET seq = 13 WHERE seq = 4", "missing", 5),  # row 4 moved last
        ("DELETE FROM audit_log WHERE seq >= 11", "removed from the end", 12),
    ],
    ids=["edit-outcome", "edit-principal", "delete", "reorder", "truncate"],
)
async def test_tampering_is_found(tmp_path: Path, tamper: str, problem: str, bad: int) -> None:
    path = tmp_path / "meta.sqlite3"
    db = await _filled(path)
    _sql(path, tamper)
    verdict = await verify(db, KEY)
    assert not verdict.ok and problem in verdict.problem and verdict.bad_seq == bad
    await db.close()


async def test_a_swap_of_two_rows_is_found(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    db = await _filled(path)
    # Reorder by swapping every field but seq between rows 3 and 4.
    cols = "at_us, principal, role, org, action, resource, outcome, detail, prev_hash, hash"
    _sql(
        path,
        f"CREATE TABLE t AS SELECT seq, {cols} FROM audit_log WHERE seq IN (3, 4)",
        "UPDATE audit_log SET seq = 1000 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = 4",
        "UPDATE audit_log SET seq = 4 WHERE seq = 1000",
    )
    verdict = await verify(db, KEY)
    assert not verdict.ok and verdict.bad_seq == 3
    await db.close()


async def test_rewriting_the_chain_without_the_key_is_found(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    db = await _filled(path)
    rows = await db.rows()
    forged = chain(
        [
            AuditEvent(
                r.principal, r.role, r.org, r.action, r.resource, "OK", r.detail, r.at_us / 1e6
            )
            for r in rows
        ],
        0,
        GENESIS,
        key=None,  # the attacker has database access, not the HMAC key
    )
    _sql(path, "DELETE FROM audit_log")
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [tuple(r.as_dict().values()) for r in forged],
    )
    conn.execute("UPDATE audit_head SET seq = ?, hash = ?", (forged[-1].seq, forged[-1].hash))
    conn.commit()
    conn.close()
    verdict = await verify(db, KEY)
    assert not verdict.ok and "altered" in verdict.problem
    await db.close()


async def test_query_filters(tmp_path: Path) -> None:
    db = await _filled(tmp_path / "meta.sqlite3")
    denied_b = await db.rows(AuditFilter(principal="dev-b", outcome="PERMISSION_DENIED"))
    assert denied_b and {(r.principal, r.outcome) for r in denied_b} == {
        ("dev-b", "PERMISSION_DENIED")
    }
    canary = await db.rows(AuditFilter(action="canary"))
    assert canary and all(r.action == "POST /v1/deploy/canary" for r in canary)
    window = await db.rows(AuditFilter(since=1_800_000_003.0, until=1_800_000_006.0))
    assert [r.seq for r in window] == [4, 5, 6]
    assert len(await db.rows(AuditFilter(limit=2))) == 2
    assert [r.seq for r in await db.rows(AuditFilter(org="acme"))] == [2, 4, 6, 8, 10, 12]
    await db.close()


async def test_a_full_buffer_drops_and_counts(tmp_path: Path) -> None:
    log = audit_log(f"sqlite:///{tmp_path / 'm.sqlite3'}", max_buffer=3)
    for e in _events(5):
        log(e)
    assert log.dropped == 2
    await log.start()
    await log.stop()
    assert log.written == 3


async def test_audit_cli_verify_and_query(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "meta.sqlite3"
    db = await _filled(path, key=None)
    await db.close()
    url = f"sqlite:///{path}"
    key_file = tmp_path / "audit.key"
    key_file.touch(mode=0o600)
    key_file.write_bytes(KEY)
    capsys.readouterr()
    import asyncio

    # The CLI runs its own event loop: call it from a thread.
    assert await asyncio.to_thread(main, ["audit", "verify", "--db", url]) == 0
    assert "audit chain OK: 12 rows" in capsys.readouterr().out
    assert await asyncio.to_thread(main, ["audit", "verify", "--db", url, "--key-file", str(key_file)]) == 1  # fmt: skip
    capsys.readouterr()
    assert (
        await asyncio.to_thread(
            main, ["audit", "query", "--db", url, "--principal", "op-1", "--json"]
        )
        == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and all('"principal": "op-1"' in line for line in lines)
    _sql(path, "UPDATE audit_log SET detail = 'nothing to see' WHERE seq = 2")
    assert await asyncio.to_thread(main, ["audit", "verify", "--db", url]) == 1
    assert "BROKEN at row 2" in capsys.readouterr().out


async def test_a_flood_of_refusals_is_coalesced_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "meta.sqlite3"
    log = audit_log(f"sqlite:///{path}")
    await log.start()
    flood = AuditEvent("dev-b", "Device", "globex", "/x.Y/Put", "m", "PERMISSION_DENIED", "no")
    for _ in range(1000):
        log(flood)
    admin = AuditEvent("admin-1", "Admin", "acme", "/x.Y/Unload", "m", "OK")
    for _ in range(30):
        log(admin)  # management actions are never coalesced
    await log.stop()
    db = SqliteAuditBackend(path)
    rows = await db.rows()
    refused = [r for r in rows if r.principal == "dev-b"]
    # Every refusal is accounted for: written one by one, or counted in a summary row (how many
    # of each depends on how many seconds the loop took on this machine).
    singles = [r for r in refused if r.detail == "no"]
    counted = [re.fullmatch(r"no \(and (\d+) more like it within 1 s\)", r.detail) for r in refused]
    summaries = [int(m.group(1)) for m in counted if m is not None]
    assert len(singles) + sum(summaries) == 1000 and log.coalesced == sum(summaries)
    assert len(refused) == len(singles) + len(summaries) < 100
    assert len([r for r in rows if r.principal == "admin-1"]) == 30
    assert (await verify(db)).ok
    await db.close()


def test_the_audit_key_file_must_be_private_and_long(tmp_path: Path) -> None:
    from cloud.authz import read_audit_key
    from common.errors import InvalidArgument

    assert read_audit_key(None) is None
    key = tmp_path / "audit.key"
    key.touch(mode=0o600)
    key.write_bytes(KEY)
    assert read_audit_key(key) == KEY
    key.chmod(0o640)
    with pytest.raises(InvalidArgument, match="0600"):
        read_audit_key(key)
    key.chmod(0o600)
    key.write_bytes(b"short")
    with pytest.raises(InvalidArgument, match="32 bytes"):
        read_audit_key(key)
