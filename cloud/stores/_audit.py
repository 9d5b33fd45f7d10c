"""The audit trail: a hash-chained, append-only table ``audit_log`` in the metadata database
(SQLite or PostgreSQL; created by migration 3 of :data:`cloud.stores.MIGRATIONS`).

Each row holds who (principal, role, org), what (action, resource), the outcome and the time,
plus ``prev_hash`` (the previous row's ``hash``) and its own ``hash``: SHA-256 — or HMAC-SHA-256
with ``authz.audit_key_file``, so that someone who can write the database but not read the key
cannot forge a consistent chain — over the canonical JSON of every field including ``seq`` and
``prev_hash``. :func:`verify_chain` finds an edited row (its hash no longer matches), a deleted
one (a gap in ``seq`` and a broken link) and reordered rows (hashes cover ``seq``); the
``audit_head`` row, updated in the same transaction as every append, catches the last rows
being cut off. Appends are serialised across replicas (PostgreSQL advisory lock, SQLite
``BEGIN IMMEDIATE``).

:class:`AuditLog` is the gateway's :class:`cloud.core.AuditSink`: calling it only queues the
event (bounded; drops are counted and logged); one owned task appends batches.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import hashlib
import hmac
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import Counter

from cloud.core import AuditEvent
from common.aio import cancel_and_wait

log = logging.getLogger(__name__)

GENESIS = "0" * 64
"""``prev_hash`` of the first row."""


AUDIT_DROPPED = Counter(
    "aiml021_audit_events_dropped_total",
    "Audit events not written, by reason (buffer_full, write_failed, shutdown).",
    ["reason"],
)

_COLUMNS = "seq, at_us, principal, role, org, action, resource, outcome, detail, prev_hash, hash"
_PG_LOCK_ID = 21022
_INSERT = (
    "INSERT INTO audit_log (seq, at_us, principal, role, org, action, resource, outcome, detail, "
    "prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_SELECT = (
    "SELECT seq, at_us, principal, role, org, action, resource, outcome, detail, prev_hash, hash "
    "FROM audit_log"
)


@dataclass(frozen=True)
class AuditRow:
    """One stored row."""

    seq: int
    at_us: int
    principal: str
    role: str
    org: str
    action: str
    resource: str
    outcome: str
    detail: str
    prev_hash: str
    hash: str

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS.split(", ")}


def row_hash(
    seq: int,
    at_us: int,
    fields: tuple[str, str, str, str, str, str, str],
    prev_hash: str,
    key: bytes | None = None,
) -> str:
    """The hash of one row: over ``[seq, at_us, principal, role, org, action, resource,
    outcome, detail, prev_hash]`` as compact JSON (HMAC when ``key``)."""
    doc = json.dumps([seq, at_us, *fields, prev_hash], separators=(",", ":"), ensure_ascii=True)
    if key:
        return hmac.new(key, doc.encode(), hashlib.sha256).hexdigest()
    return hashlib.sha256(doc.encode()).hexdigest()


def _fields(e: AuditEvent) -> tuple[str, str, str, str, str, str, str]:
    return (e.principal, e.role, e.org, e.action, e.resource, e.outcome, e.detail)


def chain(
    events: list[AuditEvent], last_seq: int, last_hash: str, key: bytes | None
) -> list[AuditRow]:
    """Rows for ``events`` appended after ``(last_seq, last_hash)``."""
    rows = []
    for e in events:
        last_seq += 1
        at_us = int(e.at * 1_000_000)
        h = row_hash(last_seq, at_us, _fields(e), last_hash, key)
        rows.append(AuditRow(last_seq, at_us, *_fields(e), last_hash, h))
        last_hash = h
    return rows


@dataclass(frozen=True)
class Verdict:
    """What :func:`verify_chain` found."""

    ok: bool
    rows: int
    head: str
    problem: str = ""
    bad_seq: int | None = None


def verify_chain(
    rows: list[AuditRow], key: bytes | None = None, head: tuple[int, str] | None = None
) -> Verdict:
    """Check ``rows`` (in ``seq`` order): contiguous from 1, each hash recomputes, each links to
    the previous one, and the last is the recorded head."""
    prev, expected_seq = GENESIS, 1
    for r in rows:
        if r.seq != expected_seq:
            return Verdict(
                False, len(rows), prev, f"row {expected_seq} missing (next is {r.seq})", r.seq
            )
        if r.prev_hash != prev:
            return Verdict(
                False, len(rows), prev, f"row {r.seq} does not link to row {r.seq - 1}", r.seq
            )
        fields = (r.principal, r.role, r.org, r.action, r.resource, r.outcome, r.detail)
        if not hmac.compare_digest(row_hash(r.seq, r.at_us, fields, r.prev_hash, key), r.hash):
            return Verdict(
                False, len(rows), prev, f"row {r.seq} was altered (hash mismatch)", r.seq
            )
        prev, expected_seq = r.hash, expected_seq + 1
    if head is not None and head != (expected_seq - 1, prev):
        return Verdict(
            False,
            len(rows),
            prev,
            f"the chain ends at row {expected_seq - 1} but the head records row {head[0]}: "
            "rows were removed from the end",
            head[0],
        )
    return Verdict(True, len(rows), prev)


@dataclass(frozen=True)
class AuditFilter:
    """What ``aiml021 audit query`` selects (empty: any)."""

    principal: str = ""
    role: str = ""
    org: str = ""
    action: str = ""
    """Substring of the action."""
    outcome: str = ""
    since: float | None = None
    until: float | None = None
    limit: int = 1000

    def where(self) -> tuple[str, list[Any]]:
        clauses, params = [], []
        for name in ("principal", "role", "org", "outcome"):
            value = getattr(self, name)
            if value:
                clauses.append(f"{name} = ?")
                params.append(value)
        if self.action:
            clauses.append("action LIKE ?")
            params.append(f"%{self.action}%")
        if self.since is not None:
            clauses.append("at_us >= ?")
            params.append(int(self.since * 1_000_000))
        if self.until is not None:
            clauses.append("at_us < ?")
            params.append(int(self.until * 1_000_000))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


class AuditBackend(Protocol):
    """Where the chain lives."""

    async def append(self, events: list[AuditEvent], key: bytes | None) -> None: ...
    async def rows(self, flt: AuditFilter | None = None) -> list[AuditRow]: ...
    async def head(self) -> tuple[int, str] | None: ...
    async def close(self) -> None: ...


class SqliteAuditBackend:
    """The chain in a SQLite file (the metadata database; migrated by its backend first)."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    @property
    def in_memory(self) -> bool:
        return self._path == ":memory:"

    def create_tables(self) -> None:
        """Create the audit tables on this connection (an in-memory database)."""
        from ._records import MIGRATIONS

        with self._lock:
            conn = self._connection()
            for version, stmts in MIGRATIONS:
                if version == 3:
                    for stmt in stmts:
                        conn.execute(stmt)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
            self._conn.execute("PRAGMA busy_timeout=5000")
        return self._conn

    def _append(self, events: list[AuditEvent], key: bytes | None) -> None:
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")  # one appender at a time, across processes too
            try:
                last = conn.execute(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                seq, prev = (int(last[0]), str(last[1])) if last else (0, GENESIS)
                rows = chain(events, seq, prev, key)
                conn.executemany(
                    _INSERT,
                    [tuple(r.as_dict().values()) for r in rows],
                )
                conn.execute(
                    "INSERT INTO audit_head (id, seq, hash) VALUES (1, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                    (rows[-1].seq, rows[-1].hash),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def _select(self, sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._connection().execute(sql, params).fetchall())

    async def append(self, events: list[AuditEvent], key: bytes | None) -> None:
        if events:
            await asyncio.to_thread(self._append, events, key)

    async def rows(self, flt: AuditFilter | None = None) -> list[AuditRow]:
        where, params = flt.where() if flt else ("", [])
        limit = f" LIMIT {int(flt.limit)}" if flt else ""
        # WHERE holds fixed column names with ``?`` placeholders; LIMIT is an int: no caller text.
        sql = _SELECT + where + " ORDER BY seq" + limit  # nosec B608
        return [AuditRow(*r) for r in await asyncio.to_thread(self._select, sql, params)]

    async def head(self) -> tuple[int, str] | None:
        found = await asyncio.to_thread(
            self._select, "SELECT seq, hash FROM audit_head WHERE id = 1", []
        )
        return (int(found[0][0]), str(found[0][1])) if found else None

    async def close(self) -> None:
        def run() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(run)


class PostgresAuditBackend:
    """The chain in PostgreSQL (psycopg 3 async); appends hold an advisory lock."""

    def __init__(self, conninfo: str, connect_timeout_s: float = 2.0) -> None:
        self._conninfo = conninfo
        self._timeout = connect_timeout_s

    async def _connect(self) -> Any:
        import psycopg

        return await psycopg.AsyncConnection.connect(
            self._conninfo, connect_timeout=max(1, int(self._timeout))
        )

    async def append(self, events: list[AuditEvent], key: bytes | None) -> None:
        if not events:
            return
        async with await self._connect() as conn:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_LOCK_ID,))
                cur = await conn.execute(
                    "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"
                )
                last = await cur.fetchone()
                seq, prev = (int(last[0]), str(last[1])) if last else (0, GENESIS)
                rows = chain(events, seq, prev, key)
                async with conn.cursor() as c:
                    await c.executemany(
                        _INSERT.replace("?", "%s"),
                        [tuple(r.as_dict().values()) for r in rows],
                    )
                await conn.execute(
                    "INSERT INTO audit_head (id, seq, hash) VALUES (1, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                    (rows[-1].seq, rows[-1].hash),
                )

    async def rows(self, flt: AuditFilter | None = None) -> list[AuditRow]:
        where, params = flt.where() if flt else ("", [])
        limit = f" LIMIT {int(flt.limit)}" if flt else ""
        # WHERE holds fixed column names with ``?`` placeholders; LIMIT is an int: no caller text.
        sql = _SELECT + where + " ORDER BY seq" + limit  # nosec B608
        async with await self._connect() as conn:
            cur = await conn.execute(sql.replace("?", "%s"), params)
            return [AuditRow(*r) for r in await cur.fetchall()]

    async def head(self) -> tuple[int, str] | None:
        async with await self._connect() as conn:
            cur = await conn.execute("SELECT seq, hash FROM audit_head WHERE id = 1")
            row = await cur.fetchone()
            return (int(row[0]), str(row[1])) if row else None

    async def close(self) -> None:
        return None


def audit_log(url: str, key: bytes | None = None, max_buffer: int = 10_000) -> AuditLog:
    """The gateway's audit log in the metadata database at ``url``."""
    return AuditLog(audit_backend(url), url=url, key=key, max_buffer=max_buffer)


def audit_backend(url: str) -> AuditBackend:
    """The audit backend of a metadata URL (``sqlite:///PATH`` or ``postgresql://...``)."""
    if url.startswith("sqlite:///"):
        return SqliteAuditBackend(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresAuditBackend(url)
    raise ValueError(f"unsupported audit database URL {url!r}")


async def migrate(url: str, backend: AuditBackend | None = None) -> None:
    """Apply the metadata migrations (the audit tables included) to the database at ``url``
    (an in-memory SQLite database lives on the audit backend's own connection: migrated there)."""
    if isinstance(backend, SqliteAuditBackend) and backend.in_memory:
        await asyncio.to_thread(backend.create_tables)
        return
    from ._settings import metadata_backend

    meta = metadata_backend(url)
    try:
        await meta.migrate()
    finally:
        await meta.close()


async def verify(backend: AuditBackend, key: bytes | None = None) -> Verdict:
    """Verify the whole chain against its head."""
    return verify_chain(await backend.rows(), key, await backend.head())


_REFUSALS = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED"})


class AuditLog:
    """The gateway's audit sink: queues events (bounded), one owned task appends them.

    A hostile caller repeating a refused call must not flood the trail (and crowd out the
    management actions): per (principal, action, outcome), at most ``refusals_per_s`` refusals a
    second are written one by one; the rest of that second are counted and written as one row
    ("... and N more like it") when the second is over. Management actions are never coalesced.
    """

    def __init__(
        self,
        backend: AuditBackend,
        *,
        url: str = "",
        key: bytes | None = None,
        max_buffer: int = 10_000,
        flush_interval_s: float = 0.2,
        refusals_per_s: int = 10,
    ) -> None:
        self.backend = backend
        self._refusals_per_s = refusals_per_s
        # (principal, action, outcome) -> [second started, written, coalesced, last event]
        self._windows: collections.OrderedDict[tuple[str, str, str], list[Any]] = (
            collections.OrderedDict()
        )
        self.coalesced = 0
        self._url = url
        self._key = key
        self._max = max_buffer
        self._interval = flush_interval_s
        self._buffer: collections.deque[AuditEvent] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        self.written = 0

    def __call__(self, event: AuditEvent, /) -> None:
        if event.outcome in _REFUSALS and not self._admit_refusal(event):
            return
        self._queue(event)

    def _queue(self, event: AuditEvent) -> None:
        if len(self._buffer) >= self._max:
            self.dropped += 1
            AUDIT_DROPPED.labels("buffer_full").inc()
            if self.dropped % 1000 == 1:  # logged once per thousand, not per event
                log.warning("audit buffer full: %d event(s) dropped so far", self.dropped)
            return
        self._buffer.append(event)

    def _admit_refusal(self, event: AuditEvent) -> bool:
        key = (event.principal, event.action, event.outcome)
        now = time.monotonic()
        window = self._windows.get(key)
        if window is None or now - window[0] >= 1.0:
            if window is not None:
                self._summarise(window)
            window = self._windows[key] = [now, 0, 0, event]
            self._windows.move_to_end(key)
            while len(self._windows) > 10_000:  # bounded: the oldest windows are closed
                self._summarise(self._windows.popitem(last=False)[1])
        window[3] = event
        if window[1] < self._refusals_per_s:
            window[1] += 1
            return True
        window[2] += 1
        self.coalesced += 1
        return False

    def _summarise(self, window: list[Any]) -> None:
        if window[2]:
            last: AuditEvent = window[3]
            more = f"and {window[2]} more like it within 1 s"
            self._queue(
                dataclasses.replace(last, detail=f"{last.detail} ({more})"[:256], at=time.time())
            )

    def _close_windows(self) -> None:
        """Write the summaries of refusal windows whose second is over."""
        now = time.monotonic()
        for key in [k for k, w in self._windows.items() if now - w[0] >= 1.0]:
            self._summarise(self._windows.pop(key))

    async def start(self) -> None:
        """Migrate the database (when built with its ``url``) and start the append task."""
        if self._url:
            try:
                await migrate(self._url, self.backend)
            except Exception as exc:  # appends fail (counted) until the database is back
                log.error("audit: migrating %s failed: %s", self._url, exc)
        self._task = asyncio.create_task(self._run(), name="audit-log")

    async def flush(self) -> None:
        """Append everything queued now."""
        self._close_windows()
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(500, len(self._buffer)))]
            try:
                await self.backend.append(batch, self._key)
                self.written += len(batch)
            except Exception as exc:
                self.dropped += len(batch)
                AUDIT_DROPPED.labels("write_failed").inc(len(batch))
                log.error("audit append of %d event(s) failed: %s", len(batch), exc)
                return

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self.flush()

    async def stop(self) -> None:
        """Append what is queued, stop the task and close the backend."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        for window in self._windows.values():
            window[0] = -1.0  # stopping: every window is over
        await self.flush()
        if self._buffer:
            AUDIT_DROPPED.labels("shutdown").inc(len(self._buffer))
        await self.backend.close()


__all__ = [
    "GENESIS",
    "AuditBackend",
    "AuditFilter",
    "AuditLog",
    "AuditRow",
    "PostgresAuditBackend",
    "SqliteAuditBackend",
    "Verdict",
    "audit_backend",
    "audit_log",
    "chain",
    "migrate",
    "row_hash",
    "verify",
    "verify_chain",
]
