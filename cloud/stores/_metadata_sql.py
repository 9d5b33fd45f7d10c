"""Metadata database backends: SQLite (default, embedded) and PostgreSQL (psycopg 3 async pool).

Both apply :data:`MIGRATIONS` in order, recording each in ``schema_migrations``, and write a batch
of records in one transaction. They are called only by :class:`MetadataWriter`, never on the
request path.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from common.privacy import KeyRing

from ._records import MIGRATIONS, PriceTable, Record, statements
from ._sealed_rows import RowSealer

_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
)
TABLES = ("devices", "sessions", "requests", "results", "costs")


@runtime_checkable
class MetadataBackend(Protocol):
    """A database the metadata writer flushes batches into."""

    async def migrate(self) -> int:
        """Apply pending migrations; returns the schema version now in force."""
        ...

    async def write(self, records: list[Record]) -> None:
        """Write ``records`` in one transaction (idempotent per request id)."""
        ...

    async def count(self, table: str) -> int:
        """Rows in one of :data:`TABLES` (operations and tests)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; one of {', '.join(TABLES)}")


class SqliteMetadataBackend:
    """SQLite file (or ``:memory:``) used from one worker thread at a time; with ``keyring``
    the rows' content columns are sealed (:mod:`cloud.stores._sealed_rows`)."""

    def __init__(
        self, path: str | Path, prices: PriceTable | None = None, keyring: KeyRing | None = None
    ) -> None:
        self._path = str(path)
        self._prices = prices or PriceTable()
        self._sealer = None if keyring is None else RowSealer(keyring)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self._path != ":memory:":
                Path(self._path).parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=5000")
        return self._conn

    def _migrate_sync(self) -> int:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_MIGRATIONS_TABLE)
                done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
                for version, stmts in MIGRATIONS:
                    if version in done:
                        continue
                    for stmt in stmts:
                        conn.execute(stmt)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)",
                        (version, time.time()),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            row = conn.execute("SELECT MAX(version) FROM schema_migrations").fetchone()
            return int(row[0])

    def _write_sync(self, records: list[Record]) -> None:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN")
            try:
                for sql, rows in statements(records, self._prices, self._sealer):
                    conn.executemany(sql, rows)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _count_sync(self, table: str) -> int:
        with self._lock:
            # ``table`` was checked against TABLES (fixed names) by count(): no caller text
            sql = f"SELECT COUNT(*) FROM {table}"  # nosec B608
            return int(self._connection().execute(sql).fetchone()[0])

    async def migrate(self) -> int:
        return await asyncio.to_thread(self._migrate_sync)

    async def write(self, records: list[Record]) -> None:
        await asyncio.to_thread(self._write_sync, records)

    async def count(self, table: str) -> int:
        _check_table(table)
        return await asyncio.to_thread(self._count_sync, table)

    async def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (operations and tests)."""

        def run() -> list[tuple[Any, ...]]:
            with self._lock:
                return list(self._connection().execute(sql, params).fetchall())

        return await asyncio.to_thread(run)

    async def close(self) -> None:
        def run() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(run)


class PostgresMetadataBackend:
    """PostgreSQL through a psycopg 3 ``AsyncConnectionPool``.

    The pool opens without waiting, so a database that is down at start-up only delays writes
    (the writer counts and drops what it cannot buffer); connection attempts time out after
    ``connect_timeout_s``. With ``keyring`` the rows' content columns are sealed.
    """

    _LOCK_ID = 21021  # advisory lock serialising migrations across replicas

    def __init__(
        self,
        conninfo: str,
        prices: PriceTable | None = None,
        *,
        min_size: int = 1,
        max_size: int = 4,
        connect_timeout_s: float = 2.0,
        keyring: KeyRing | None = None,
    ) -> None:
        from psycopg_pool import AsyncConnectionPool

        self._prices = prices or PriceTable()
        self._sealer = None if keyring is None else RowSealer(keyring)
        self._timeout = connect_timeout_s
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout_s,
            open=False,
            kwargs={"connect_timeout": max(1, int(connect_timeout_s)), "autocommit": False},
        )
        self._opened = False

    async def _ensure_open(self) -> None:
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True

    async def migrate(self) -> int:
        await self._ensure_open()
        async with self._pool.connection() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._LOCK_ID,))
                await conn.execute(_MIGRATIONS_TABLE)
                cur = await conn.execute("SELECT version FROM schema_migrations")
                done = {row[0] for row in await cur.fetchall()}
                for version, stmts in MIGRATIONS:
                    if version in done:
                        continue
                    for stmt in stmts:
                        await conn.execute(stmt)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, applied_at) VALUES (%s, %s)",
                        (version, time.time()),
                    )
            cur = await conn.execute("SELECT MAX(version) FROM schema_migrations")
            row = await cur.fetchone()
            return int(row[0]) if row else 0

    async def write(self, records: list[Record]) -> None:
        await self._ensure_open()
        # Off the event loop: sealing a batch of 500 rows is milliseconds of CPU.
        batch = await asyncio.to_thread(statements, records, self._prices, self._sealer)
        async with self._pool.connection() as conn:
            async with conn.transaction(), conn.cursor() as cur:
                for sql, rows in batch:
                    await cur.executemany(sql.replace("?", "%s"), rows)

    async def count(self, table: str) -> int:
        _check_table(table)  # one of TABLES (fixed names): no caller text reaches the SQL
        return len(await self.query(f"SELECT 1 FROM {table}"))  # nosec B608

    async def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query with ``?`` placeholders (operations and tests)."""
        await self._ensure_open()
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), params)
            return list(await cur.fetchall())

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False
