"""The deny-list of revoked device certificates and devices, kept in the store the gateways
share (SQLite / PostgreSQL, or Redis), written by ``aiml021 ca revoke`` and read by every
gateway and by the issuing CA.

An entry names a certificate (``serial``, hex: that key is no longer trusted, the device may
enroll again) or a device (``device``: every certificate of it, and its enrollment and
renewal, are refused). Gateways keep a :class:`RevocationCache`: the whole list, refreshed every
few seconds, so the check on every call is a set lookup; a refresh that finds new entries tells
its listeners (the gateway ends the revoked devices' open streams).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from common.aio import cancel_and_wait
from common.auth._identity import DeviceIdentity
from common.errors import InvalidArgument, Unauthenticated

log = logging.getLogger(__name__)

Kind = Literal["serial", "device"]
_TABLE = "aiml021_revocations"
_REDIS_KEY = "aiml021:revocations"
_INSERT = (
    "INSERT INTO aiml021_revocations (kind, value, reason, revoked_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (kind, value) DO NOTHING"
)
_SELECT = "SELECT kind, value FROM aiml021_revocations"


@dataclass(frozen=True)
class Revocations:
    """A snapshot of the deny-list."""

    serials: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()

    def reason(self, identity: DeviceIdentity) -> str | None:
        """Why ``identity`` is refused, or None when it is not revoked."""
        if identity.device_id in self.devices:
            return f"device {identity.device_id!r} is revoked"
        if identity.serial in self.serials:
            return f"certificate {identity.serial} of device {identity.device_id!r} is revoked"
        return None


class DenyList(Protocol):
    """Where revocations are kept."""

    async def revoke(self, kind: Kind, value: str, reason: str = "") -> None:
        """Add one entry (idempotent)."""
        ...

    async def snapshot(self) -> Revocations:
        """Every entry."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def _check(kind: str, value: str) -> None:
    if kind not in ("serial", "device") or not value or len(value) > 256:
        raise InvalidArgument(f"revocation needs kind serial|device and a value (got {kind!r})")


def _collect(rows: list[tuple[str, str]]) -> Revocations:
    return Revocations(
        frozenset(v for k, v in rows if k == "serial"),
        frozenset(v for k, v in rows if k == "device"),
    )


class SqlDenyList:
    """The deny-list as a table in SQLite (``sqlite:///PATH``) or PostgreSQL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sqlite = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
        if self._sqlite is None and not url.startswith(("postgresql://", "postgres://")):
            raise InvalidArgument(f"deny-list URL {url!r}: sqlite:///PATH or postgresql://...")
        self._ready = False

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[str, str]]:
        create = (
            f"CREATE TABLE IF NOT EXISTS {_TABLE} (kind TEXT NOT NULL, value TEXT NOT NULL, "
            "reason TEXT NOT NULL, revoked_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (kind, value))"
        )
        if self._sqlite is not None:
            if self._sqlite != ":memory:":
                Path(self._sqlite).parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(sqlite3.connect(self._sqlite, timeout=10)) as lite, lite:
                if not self._ready:
                    lite.execute(create)
                rows = lite.execute(sql, args).fetchall()
        else:
            import psycopg

            with psycopg.connect(self.url, connect_timeout=10) as pg:
                if not self._ready:
                    pg.execute(create)
                cur = pg.execute(sql.replace("?", "%s"), args)
                rows = cur.fetchall() if cur.description is not None else []
        self._ready = True
        return [(str(k), str(v)) for k, v in rows] if rows else []

    async def revoke(self, kind: Kind, value: str, reason: str = "") -> None:
        _check(kind, value)
        await asyncio.to_thread(
            self._run,
            _INSERT,
            (kind, value, reason, time.time()),
        )

    async def snapshot(self) -> Revocations:
        return _collect(await asyncio.to_thread(self._run, _SELECT))

    async def close(self) -> None:
        return None


class RedisDenyList:
    """The deny-list as one Redis hash (``kind:value`` -> reason)."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self._redis = aioredis.Redis.from_url(url)

    async def revoke(self, kind: Kind, value: str, reason: str = "") -> None:
        _check(kind, value)
        await self._redis.hsetnx(_REDIS_KEY, f"{kind}:{value}", reason or "-")

    async def snapshot(self) -> Revocations:
        fields = await self._redis.hkeys(_REDIS_KEY)
        pairs = [bytes(f).decode().partition(":") for f in fields]
        return _collect([(k, v) for k, _, v in pairs])

    async def close(self) -> None:
        await self._redis.aclose()


def open_deny_list(url: str) -> DenyList:
    """The deny-list at ``url``: ``sqlite:///PATH``, ``postgresql://...`` or ``redis://...``."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisDenyList(url)
    return SqlDenyList(url)


class RevocationCache:
    """The deny-list held in memory and refreshed every ``refresh_s``; :meth:`check` is what
    the gateway calls per request. When a refresh fails the last list stays in force (logged);
    the first load must succeed."""

    def __init__(self, deny_list: DenyList, refresh_s: float = 2.0) -> None:
        self.deny_list = deny_list
        self.refresh_s = refresh_s
        self.current = Revocations()
        self.loaded_at = 0.0
        self._listeners: list[Callable[[Revocations], None]] = []
        self._task: asyncio.Task[None] | None = None

    def on_change(self, listener: Callable[[Revocations], None]) -> None:
        """Call ``listener(revocations)`` after each refresh that found new entries."""
        self._listeners.append(listener)

    def check(self, identity: DeviceIdentity) -> None:
        """Unauthenticated when ``identity`` (its device or certificate) is revoked."""
        why = self.current.reason(identity)
        if why is not None:
            raise Unauthenticated(why)

    async def refresh(self) -> Revocations:
        """Read the list now; tells listeners when it grew."""
        fresh = await self.deny_list.snapshot()
        grew = not (fresh.serials <= self.current.serials and fresh.devices <= self.current.devices)
        self.current, self.loaded_at = fresh, time.monotonic()
        if grew:
            for listener in self._listeners:
                listener(fresh)
        return fresh

    async def start(self) -> None:
        """Load the list (failing loudly) and keep refreshing it."""
        try:
            await self.refresh()
        except Exception as exc:
            raise InvalidArgument(f"revocation deny-list unreadable: {exc}") from exc
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="revocations")

    async def _loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
                if failing:
                    log.info("revocation deny-list readable again")
                failing = False
            except Exception as exc:
                if not failing:
                    log.warning("revocation deny-list refresh failed, keeping the last: %s", exc)
                failing = True

    async def close(self) -> None:
        """Stop refreshing and close the store."""
        await cancel_and_wait(self._task)
        self._task = None
        await self.deny_list.close()


__all__ = [
    "DenyList",
    "RedisDenyList",
    "RevocationCache",
    "Revocations",
    "SqlDenyList",
    "open_deny_list",
]
