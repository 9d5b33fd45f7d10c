"""The revocation deny-list in each store the gateways may share (real Redis, PostgreSQL and
SQLite): written by one process, read by another, entries idempotent, the gateway's cache told
only when the list grows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from common.auth import DeviceIdentity, RevocationCache, open_deny_list
from common.errors import InvalidArgument, Unauthenticated
from tests.integration._services import (  # noqa: F401 - fixtures
    database_url,
    postgres_server,
    redis_server,
    redis_url,
)

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'deny.sqlite3'}"
    if request.param == "postgres":
        return str(request.getfixturevalue("database_url"))
    url = str(request.getfixturevalue("redis_url"))
    return url


async def test_revocations_reach_another_reader_and_the_cache(store_url: str) -> None:
    writer, reader = open_deny_list(store_url), open_deny_list(store_url)
    cache = RevocationCache(reader, refresh_s=60)
    grown: list[int] = []
    cache.on_change(lambda r: grown.append(len(r.serials) + len(r.devices)))
    try:
        await cache.start()
        a = DeviceIdentity("cam-a", "1f", NOW)
        b = DeviceIdentity("cam-b", "2e", NOW)
        cache.check(a)
        await writer.revoke("serial", "1f", "key lost")
        await writer.revoke("serial", "1f", "again")  # idempotent
        await writer.revoke("device", "cam-b", "stolen")
        await cache.refresh()
        with pytest.raises(Unauthenticated, match="certificate 1f of device 'cam-a' is revoked"):
            cache.check(a)
        with pytest.raises(Unauthenticated, match="device 'cam-b' is revoked"):
            cache.check(b)
        cache.check(DeviceIdentity("cam-a", "3d", NOW))  # its next certificate is fine
        await cache.refresh()  # nothing new: listeners are not called again
        assert grown == [2]
        with pytest.raises(InvalidArgument):
            await writer.revoke("everything", "x")  # type: ignore[arg-type]
    finally:
        await cache.close()
        await writer.close()


async def test_an_unreadable_deny_list_stops_the_start() -> None:
    cache = RevocationCache(open_deny_list("postgresql://nobody@127.0.0.1:1/none"))
    with pytest.raises(InvalidArgument, match="deny-list unreadable"):
        await cache.start()
