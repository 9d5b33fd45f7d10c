"""Right to erasure: ``aiml021 privacy forget DEVICE`` removes a device's records from every store
the gateway writes and leaves a tombstone that says it happened.

- Metadata database (SQLite or PostgreSQL): every table with a ``device_id`` column (found from
  the catalogue, so tables added later are covered), matching the raw id or its pseudonym. The
  append-only audit log is left alone: its hash chain is the evidence, and its principals are the
  callers, not the data subjects.
- Redis: the device's idempotency entries (their keys are namespaced by org and device, see
  ``cloud.core._tenancy``) and its result-cache entries: those private to it
  (``authz.private_results``) and, in a cache its org shares, every entry its requests wrote or
  read (the cache keeps a set of them per device, ``RedisResultCache.note_owner``). An entry
  another device also used goes too: it is that device's cache miss, and this device's data.
  ``flush_org_cache`` drops the org's whole cache besides (entries written before the owner
  sets existed).
- Tombstone: one row in ``privacy_tombstones`` (in the same transaction as the deletes) with the
  device's pseudonym, never its raw id, the time, who asked, and how many records went where;
  and the same as an event in the hash-chained audit log (``cloud.stores`` audit_log, action
  ``privacy.forget``), so that the erasure itself is tamper-evident.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.core import AuditEvent, Principal, Role
from cloud.core._tenancy import idempotency_key, org_namespace, principal_namespace
from cloud.stores import RedisResultCache
from common.privacy import Pseudonymiser

TOMBSTONES = "privacy_tombstones"
_TOMBSTONE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {TOMBSTONES} ("
    "tombstone_id TEXT PRIMARY KEY, subject TEXT NOT NULL, forgotten_at DOUBLE PRECISION NOT NULL, "
    "actor TEXT NOT NULL, detail TEXT NOT NULL)"
)
_KEEP = {"audit_log", "audit_head", TOMBSTONES, "schema_migrations"}


@dataclass
class ForgetReport:
    """What ``forget`` removed."""

    subject: str
    """How the tombstone names the device: its pseudonym (or a SHA-256 digest without a key)."""
    rows: dict[str, int] = field(default_factory=dict)
    """Table -> rows deleted."""
    redis: dict[str, int] = field(default_factory=dict)
    """Redis keys deleted: ``idempotency``, ``cache`` (the device's result-cache entries, its
    own and those its org shares) and ``org_cache`` (the rest of the org's, with
    ``flush_org_cache``)."""
    tombstone_id: str = ""

    @property
    def redis_keys(self) -> int:
        """Redis keys deleted in all."""
        return sum(self.redis.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "rows": self.rows,
            "redis": self.redis,
            "redis_keys": self.redis_keys,
            "tombstone_id": self.tombstone_id,
        }


def _device(org: str, device_id: str) -> Principal:
    return Principal(subject=device_id, role=Role.DEVICE, org=org, device_id=device_id)


def idempotency_prefix(org: str, device_id: str, prefix: str = "aiml021:idem:") -> str:
    """Redis key prefix of a device's idempotency entries (the data plane scopes each key to
    the calling principal, whose subject is the device id)."""
    return prefix + idempotency_key(_device(org, device_id), "k")[:-1]


def cache_prefix(org: str, prefix: str = "aiml021:cache:") -> str:
    """Redis key prefix of an org's result-cache entries."""
    return f"{prefix}{org_namespace(_device(org, ''))}/"


def private_cache_prefix(org: str, device_id: str, prefix: str = "aiml021:cache:") -> str:
    """Redis key prefix of a device's own result-cache entries (``authz.private_results``)."""
    return f"{prefix}{principal_namespace(_device(org, device_id))}/"


def cache_owner_key(org: str, device_id: str) -> str:
    """Redis set of the shared result-cache entries a device wrote or read."""
    return RedisResultCache.OWNERS_PREFIX + principal_namespace(_device(org, device_id))


def _subject(device_id: str, pseudonymiser: Pseudonymiser | None) -> str:
    if pseudonymiser is not None:
        return pseudonymiser.device(device_id)
    return "sha256:" + hashlib.sha256(device_id.encode()).hexdigest()


def _ids(
    device_id: str, pseudonymiser: Pseudonymiser | None, retired: list[Pseudonymiser]
) -> list[str]:
    """The raw id and its pseudonym under the current key and every retired one: rows written
    before a pseudonym key rotation are the device's too."""
    ids = [device_id]
    for p in [pseudonymiser, *retired]:
        if p is not None:
            ids.append(p.device(device_id))
    return ids


def _forget_sqlite(path: str, ids: list[str], report: ForgetReport, actor: str) -> None:
    if path != ":memory:" and not Path(path).exists():
        raise FileNotFoundError(f"metadata database {path} does not exist")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_TOMBSTONE_TABLE)
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            marks = ",".join("?" * len(ids))
            for table in sorted(tables):
                cols = {r[1] for r in conn.execute(f'PRAGMA table_info("{table}")')}
                if table in _KEEP or "device_id" not in cols:
                    continue
                # ``table`` is one of the database's own tables (sqlite_master), ``marks`` only
                # ``?`` placeholders: the device ids are parameters, no caller text is SQL.
                sql = f'DELETE FROM "{table}" WHERE device_id IN ({marks})'  # nosec B608
                cur = conn.execute(sql, ids)
                report.rows[table] = cur.rowcount
            # TOMBSTONES is this module's constant table name; the values are parameters.
            conn.execute(
                f"INSERT INTO {TOMBSTONES} VALUES (?, ?, ?, ?, ?)",  # nosec B608
                (report.tombstone_id, report.subject, time.time(), actor, _detail(report)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


async def _forget_postgres(url: str, ids: list[str], report: ForgetReport, actor: str) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(url, connect_timeout=5) as conn:
        async with conn.transaction():
            await conn.execute(sql.SQL(_TOMBSTONE_TABLE))
            cur = await conn.execute(
                "SELECT table_name FROM information_schema.columns WHERE column_name = 'device_id' "
                "AND table_schema = current_schema()"
            )
            tables = sorted({r[0] for r in await cur.fetchall()} - _KEEP)
            for table in tables:
                query = sql.SQL("DELETE FROM {} WHERE device_id = ANY(%s)").format(
                    sql.Identifier(table)
                )
                cur = await conn.execute(query, (ids,))
                report.rows[table] = cur.rowcount
            await conn.execute(
                "INSERT INTO privacy_tombstones VALUES (%s, %s, %s, %s, %s)",
                (report.tombstone_id, report.subject, time.time(), actor, _detail(report)),
            )


def _detail(report: ForgetReport) -> str:
    return json.dumps({"rows": report.rows, "redis": report.redis}, sort_keys=True)


async def _forget_redis(client: Any, pattern: str) -> int:
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=pattern, count=500):
        batch.append(key)
        if len(batch) >= 500:
            deleted += int(await client.delete(*batch))
            batch = []
    if batch:
        deleted += int(await client.delete(*batch))
    return deleted


async def _forget_shared_cache(client: Any, owners: str) -> int:
    """Delete the entries in the device's owner set, then the set."""
    deleted = 0
    keys = sorted(await client.smembers(owners))
    for i in range(0, len(keys), 500):
        deleted += int(await client.delete(*keys[i : i + 500]))
    await client.delete(owners)
    return deleted


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def forget_device(
    device_id: str,
    *,
    metadata_url: str | None,
    redis_url: str | None = None,
    org: str = "",
    pseudonymiser: Pseudonymiser | None = None,
    retired_pseudonymisers: list[Pseudonymiser] | None = None,
    flush_org_cache: bool = False,
    actor: str = "cli",
    redis_client: Any = None,
    audit: bool = True,
    audit_key: bytes | None = None,
) -> ForgetReport:
    """Remove ``device_id``'s records from the metadata database at ``metadata_url`` and its
    idempotency and result-cache entries (and, with ``flush_org_cache``, its org's whole cache)
    from the Redis at ``redis_url``; write the tombstone last, with the counts, in the metadata
    database, and (``audit``) append it to the audit log there, chained with ``audit_key`` when
    it has one. Rows are found by the raw id and its pseudonyms under ``pseudonymiser`` and
    ``retired_pseudonymisers`` (keys rotated out)."""
    if not device_id:
        raise ValueError("forget needs a device id")
    report = ForgetReport(subject=_subject(device_id, pseudonymiser), tombstone_id=uuid.uuid4().hex)
    client = redis_client
    if client is None and redis_url:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)
    if client is not None:
        try:
            report.redis["idempotency"] = await _forget_redis(
                client, _glob_escape(idempotency_prefix(org, device_id)) + "*"
            )
            report.redis["cache"] = await _forget_shared_cache(
                client, cache_owner_key(org, device_id)
            ) + await _forget_redis(
                client, _glob_escape(private_cache_prefix(org, device_id)) + "*"
            )
            if flush_org_cache:
                report.redis["org_cache"] = await _forget_redis(
                    client, _glob_escape(cache_prefix(org)) + "*"
                )
        finally:
            if redis_client is None:
                await client.aclose()
    ids = _ids(device_id, pseudonymiser, retired_pseudonymisers or [])
    if metadata_url and metadata_url != "none":
        if metadata_url.startswith("sqlite:///"):
            import asyncio

            path = metadata_url.removeprefix("sqlite:///")
            await asyncio.to_thread(_forget_sqlite, path, ids, report, actor)
        elif metadata_url.startswith(("postgresql://", "postgres://")):
            await _forget_postgres(metadata_url, ids, report, actor)
        else:
            raise ValueError(f"unsupported metadata URL {metadata_url!r}")
        if audit:
            await _audit(metadata_url, report, actor, org, audit_key)
    return report


async def _audit(url: str, report: ForgetReport, actor: str, org: str, key: bytes | None) -> None:
    from cloud.stores import audit_backend
    from cloud.stores._audit import migrate

    backend = audit_backend(url)
    try:
        await migrate(url, backend)
        event = AuditEvent(
            principal=actor, role="operator", org=org, action="privacy.forget",
            resource=report.subject, outcome="OK",
            detail=f"tombstone {report.tombstone_id}: {_detail(report)}",
        )  # fmt: skip
        await backend.append([event], key)
    finally:
        await backend.close()


__all__ = [
    "TOMBSTONES",
    "ForgetReport",
    "cache_owner_key",
    "cache_prefix",
    "forget_device",
    "idempotency_prefix",
    "private_cache_prefix",
]
