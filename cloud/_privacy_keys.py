"""Key rotation for what the gateway keeps at rest: ``aiml021 privacy keys reseal`` opens every
sealed value (metadata rows, Redis idempotency entries and result-cache entries) and seals it
again under the ring's primary key, so the old key can be retired; ``census`` counts what is
still sealed under each key (``keys retire --config`` refuses to drop a key that still seals
something).

A row or value that does not open — altered, moved to another row, sealed under a key the ring
no longer holds, or written in the clear — is never rewritten: it is listed in the report's
``unreadable`` with the reason, and the run goes on. ``seal_clear`` adopts values written in the
clear (before encryption was switched on) by sealing them; an operator asks for that explicitly,
because a clear value may also be one injected around the gateway.

Each database row is rewritten with a compare-and-set on its old ``sealed`` value, each Redis
value with a compare-and-set script that keeps its TTL, so a gateway writing at the same time
never loses a write.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.stores._sealed_rows import CLEARED, ROW_KEYS, SEALED_COLUMNS, RowSealer, clear_values
from common.errors import DataLoss
from common.privacy import KeyRing, is_sealed

REDIS_PREFIXES = ("aiml021:idem:", "aiml021:cache:")
"""Key prefixes of the Redis stores whose values are sealed (``cloud.stores`` defaults)."""

_CAS = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
"""


@dataclass
class ResealReport:
    """What a reseal (or a census) found and did."""

    resealed: Counter[str] = field(default_factory=Counter)
    """Store (a table or ``redis``) -> values sealed again under the primary key."""
    adopted: Counter[str] = field(default_factory=Counter)
    """Store -> values that were in the clear and are now sealed (``seal_clear``)."""
    key_ids: Counter[str] = field(default_factory=Counter)
    """Key id -> values sealed under it after the run."""
    unreadable: list[str] = field(default_factory=list)
    """Precise reasons, one per value that did not open (left as it was)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "resealed": dict(self.resealed),
            "adopted": dict(self.adopted),
            "key_ids": dict(self.key_ids),
            "unreadable": self.unreadable,
        }


def _not_sealed(sealer: RowSealer, table: str, key: tuple[object, ...]) -> str:
    try:
        sealer.blob(table, key, "")
    except DataLoss as exc:
        return exc.message
    raise AssertionError("an empty sealed column opened")


Fetch = Callable[[str, tuple[object, ...]], Awaitable[list[tuple[Any, ...]]]]
Execute = Callable[[str, tuple[object, ...]], Awaitable[int]]


async def _reseal_table(
    table: str,
    sealer: RowSealer,
    fetch: Fetch,
    execute: Execute,
    report: ResealReport,
    *,
    seal_clear: bool,
    dry_run: bool,
) -> None:
    keys, content = ROW_KEYS[table], SEALED_COLUMNS[table]
    # Table and column names are this module's constants; every value is a parameter.
    select = f"SELECT {', '.join(keys + content)}, sealed FROM {table}"  # nosec B608
    where = " AND ".join(f"{k} = ?" for k in keys)
    ring = sealer.ring
    for row in await fetch(select, ()):
        key = tuple(row[: len(keys)])
        clear = dict(zip(content, row[len(keys) : -1], strict=True))
        old = row[-1]
        if not old:
            if not seal_clear:
                report.unreadable.append(_not_sealed(sealer, table, key))
                continue
            report.key_ids[ring.primary] += 1
            report.adopted[table] += 1
            if not dry_run:
                sets = ", ".join(f"{c} = ?" for c in content)
                sql = f"UPDATE {table} SET {sets}, sealed = ? WHERE {where} AND sealed = ''"  # nosec B608
                new = sealer.seal(table, key, clear_values(table, clear))
                await execute(sql, (*(CLEARED[c] for c in content), new, *key))
            continue
        try:
            values = sealer.open(table, key, old, clear)
        except DataLoss as exc:
            report.unreadable.append(exc.message)
            continue
        kid = sealer.key_id(table, key, old)
        if kid == ring.primary or dry_run:
            report.key_ids[kid] += 1
            continue
        sql = f"UPDATE {table} SET sealed = ? WHERE {where} AND sealed = ?"  # nosec B608
        if await execute(sql, (sealer.seal(table, key, values), *key, old)):
            report.resealed[table] += 1
            report.key_ids[ring.primary] += 1
        else:  # the gateway rewrote it meanwhile, under the primary key
            report.key_ids[ring.primary] += 1


async def _reseal_sqlite(path: str, sealer: RowSealer, report: ResealReport, **kw: bool) -> None:
    if not Path(path).exists():
        raise FileNotFoundError(f"metadata database {path} does not exist")
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    async def fetch(sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        return await asyncio.to_thread(lambda: conn.execute(sql, params).fetchall())

    async def execute(sql: str, params: tuple[object, ...]) -> int:
        return await asyncio.to_thread(lambda: conn.execute(sql, params).rowcount)

    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in _sealable(
                {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")},
                lambda t: {r[1] for r in conn.execute(f'PRAGMA table_info("{t}")')},
            ):
                await _reseal_table(table, sealer, fetch, execute, report, **kw)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


def _sealable(tables: set[str], columns: Callable[[str], set[str]]) -> list[str]:
    """The tables with sealed columns that the database has migrated (``sealed`` column)."""
    return [t for t in SEALED_COLUMNS if t in tables and "sealed" in columns(t)]


async def _reseal_postgres(url: str, sealer: RowSealer, report: ResealReport, **kw: bool) -> None:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:

        async def fetch(sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
            cur = await conn.execute(sql.replace("?", "%s"), params)
            return list(await cur.fetchall())

        async def execute(sql: str, params: tuple[object, ...]) -> int:
            cur = await conn.execute(sql.replace("?", "%s"), params)
            return cur.rowcount

        async with conn.transaction():
            cur = await conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema()"
            )
            cols: dict[str, set[str]] = {}
            for t, c in await cur.fetchall():
                cols.setdefault(t, set()).add(c)
            for table in _sealable(set(cols), lambda t: cols[t]):
                await _reseal_table(table, sealer, fetch, execute, report, **kw)


async def _reseal_redis(
    client: Any,
    ring: KeyRing,
    report: ResealReport,
    prefixes: tuple[str, ...],
    *,
    seal_clear: bool,
    dry_run: bool,
) -> None:
    cas = client.register_script(_CAS)
    for prefix in prefixes:
        async for key in client.scan_iter(match=prefix + "*", count=500, _type="string"):
            value = await client.get(key)
            if value is None:
                continue  # expired meanwhile
            name = key.decode() if isinstance(key, bytes) else str(key)
            if not is_sealed(value):
                if not seal_clear:
                    report.unreadable.append(f"redis {name}: value is not sealed")
                    continue
                report.adopted["redis"] += 1
                report.key_ids[ring.primary] += 1
                if not dry_run:
                    await cas(keys=[key], args=[value, ring.seal(value, name.encode())])
                continue
            try:
                plain = ring.open(value, name.encode())
            except DataLoss as exc:
                report.unreadable.append(f"redis {name}: {exc.message}")
                continue
            kid = ring.key_id_of(value)
            if kid == ring.primary or dry_run:
                report.key_ids[kid] += 1
                continue
            await cas(keys=[key], args=[value, ring.seal(plain, name.encode())])
            report.resealed["redis"] += 1
            report.key_ids[ring.primary] += 1


async def reseal(
    ring: KeyRing,
    *,
    metadata_url: str | None,
    redis_url: str | None = None,
    redis_client: Any = None,
    seal_clear: bool = False,
    dry_run: bool = False,
    redis_prefixes: tuple[str, ...] = REDIS_PREFIXES,
) -> ResealReport:
    """Seal everything the stores keep under ``ring``'s primary key (``dry_run``: only count,
    by key id — the census ``keys retire`` relies on); Redis keys under ``redis_prefixes``."""
    report = ResealReport()
    sealer = RowSealer(ring)
    kw = {"seal_clear": seal_clear, "dry_run": dry_run}
    if metadata_url and metadata_url != "none":
        if metadata_url.startswith("sqlite:///"):
            await _reseal_sqlite(metadata_url.removeprefix("sqlite:///"), sealer, report, **kw)
        elif metadata_url.startswith(("postgresql://", "postgres://")):
            await _reseal_postgres(metadata_url, sealer, report, **kw)
        else:
            raise ValueError(f"unsupported metadata URL {metadata_url!r}")
    client = redis_client
    if client is None and redis_url:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
    if client is not None:
        try:
            await _reseal_redis(client, ring, report, redis_prefixes, **kw)
        finally:
            if redis_client is None:
                await client.aclose()
    return report


__all__ = ["REDIS_PREFIXES", "ResealReport", "reseal"]
