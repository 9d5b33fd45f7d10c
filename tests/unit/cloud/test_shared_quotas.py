"""The pure parts of quotas shared over gateway processes (``limits.shared``): lease sizes, key
names, and how :class:`DeviceQuotas` uses a :class:`SharedQuotas` (a fake here; the Redis one is
tested against a real Redis in tests/integration/cloud/test_shared_quotas.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from cloud._settings import GatewaySettings
from cloud._shared_quotas import device_key, lease_size
from cloud.core import DeviceQuota, DeviceQuotas
from cloud.core._session_types import ByteBudget
from common.errors import ResourceExhausted


class FakeShared:
    def __init__(self, grant: bool | None, sessions_elsewhere: int = 0) -> None:
        self.grant = grant
        self.elsewhere = sessions_elsewhere
        self.leased: list[str] = []
        self.recorded: dict[str, int] = {}

    async def lease(self, device: str) -> None:
        self.leased.append(device)

    def spend(self, device: str) -> bool | None:
        return self.grant

    async def open_session(self, device: str, sessions_here: int) -> None:
        if self.elsewhere + sessions_here > 2:
            raise ResourceExhausted("over all gateway processes")
        self.recorded[device] = sessions_here

    def session_closed(self, device: str, sessions_here: int) -> None:
        self.recorded[device] = sessions_here


def quotas(shared: FakeShared, **kw: object) -> DeviceQuotas:
    return DeviceQuotas(DeviceQuota(**kw), ByteBudget(2**30), shared=shared)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "burst", "lease"),
    [(500.0, 500, 25), (10_000.0, 100, 25), (1.0, 10, 1), (2.0, 1, 1), (200.0, 40, 10)],
)
def test_a_lease_is_50_ms_of_the_rate_at_most_a_quarter_of_the_burst_at_least_one(
    rate: float, burst: int, lease: int
) -> None:
    assert lease_size(DeviceQuota(requests_per_s=rate, burst=burst)) == lease


def test_device_keys_have_a_fixed_size_whatever_the_id() -> None:
    keys = {device_key("p", "rate", d) for d in ("a", "x" * 10_000, "\udcff\x00\n")}
    assert len(keys) == 3
    assert {len(k) for k in keys} == {len("p:rate:") + 32}


async def test_a_dry_shared_bucket_refuses_naming_the_limit_over_all_processes() -> None:
    q = quotas(FakeShared(grant=False), requests_per_s=10.0, burst=10)
    with pytest.raises(ResourceExhausted) as info:
        await q.enter_call("d")
    assert "over all gateway processes (limits.requests_per_s)" in info.value.message
    assert q.connected_devices == 0  # nothing held for the refused call


async def test_a_granted_shared_token_spends_nothing_of_the_local_bucket() -> None:
    shared = FakeShared(grant=True)
    q = quotas(shared, requests_per_s=1.0, burst=1)
    for _ in range(5):
        with await q.enter_call("d"):
            pass
    assert shared.leased == ["d"] * 5


async def test_without_a_shared_answer_the_local_bucket_decides() -> None:
    q = quotas(FakeShared(grant=None), requests_per_s=1.0, burst=2)
    for _ in range(2):
        with await q.enter_call("d"):
            pass
    with pytest.raises(ResourceExhausted) as info:
        await q.enter_call("d")
    assert "over all gateway processes" not in info.value.message


async def test_callers_that_are_no_device_lease_nothing() -> None:
    shared = FakeShared(grant=False)
    q = quotas(shared)
    with await q.enter_call(""):
        pass
    assert shared.leased == []


async def test_a_session_refused_over_all_processes_is_not_counted_here() -> None:
    shared = FakeShared(grant=True, sessions_elsewhere=1)
    q = quotas(shared, max_sessions=8)
    ledger = await q.enter_session("d")
    with pytest.raises(ResourceExhausted):
        await q.enter_session("d")
    assert ledger.sessions == 1
    assert shared.recorded == {"d": 1}
    ledger.close_session()
    assert shared.recorded == {"d": 0}
    assert q.connected_devices == 0


def test_shared_limits_need_redis_stores_naming_the_settings() -> None:
    with pytest.raises(ValidationError) as info:
        GatewaySettings(limits={"shared": True})  # type: ignore[arg-type]
    assert (
        'limits.shared = true counts quotas over all gateway processes in Redis: set stores.backend = "redis"'
        in str(info.value)
    )
    s = GatewaySettings(
        limits={"shared": True},  # type: ignore[arg-type]
        stores={"backend": "redis", "redis_url": "redis://127.0.0.1:6379/0"},  # type: ignore[arg-type]
    )
    assert s.limits.shared
