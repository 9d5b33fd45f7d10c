"""Per-device quotas shared by gateway processes over a real Redis (``limits.shared``): two
:class:`DeviceQuotas`, each with its own :class:`RedisQuotas`, stand for two processes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from inference import grpc_service_pb2_grpc as pb_grpc

from cloud import Gateway
from cloud._settings import GatewaySettings
from cloud._shared_quotas import LEASE_S, RedisQuotas, lease_size
from cloud.core import DeviceQuota, DeviceQuotas
from cloud.core._session_types import ByteBudget
from common.auth import write_dev_pki
from common.errors import ResourceExhausted
from tests.integration._services import (  # noqa: F401
    RedisServer,
    redis_server,
    redis_url,
    run_redis,
)
from tests.integration.cloud._gateway import models_dir
from tests.integration.cloud.test_call_quotas import _channel, _grpc_code, _model_infer


@asynccontextmanager
async def process(
    quota: DeviceQuota, url: str, prefix: str, *, ttl_s: float = 10.0
) -> AsyncIterator[tuple[DeviceQuotas, RedisQuotas]]:
    shared = RedisQuotas(quota, url, prefix=prefix, heartbeat_ttl_s=ttl_s, retry_s=0.2)
    await shared.start()
    try:
        yield DeviceQuotas(quota, ByteBudget(2**40), shared=shared), shared
    finally:
        await shared.close()


async def admitted(quotas: DeviceQuotas, device: str) -> bool:
    try:
        with await quotas.enter_call(device):
            return True
    except ResourceExhausted as exc:
        assert "limits.requests_per_s" in exc.message
        return False


OK = grpc.StatusCode.OK


@pytest.fixture
def prefix() -> str:
    return f"test-sq-{uuid.uuid4().hex[:8]}"


async def test_a_devices_rate_over_two_processes_is_bounded_by_rate_time_burst_and_leases(
    redis_url: str,  # noqa: F811
    prefix: str,
) -> None:
    quota = DeviceQuota(requests_per_s=200.0, burst=40)
    lease = lease_size(quota)
    async with (
        process(quota, redis_url, prefix) as (a, _),
        process(quota, redis_url, prefix) as (b, _),
    ):
        start = time.monotonic()
        got = 0
        while time.monotonic() - start < 1.0:
            for quotas in (a, b):
                for _ in range(5):
                    got += await admitted(quotas, "flooder")
            await asyncio.sleep(0.002)
        elapsed = time.monotonic() - start
        # one bucket for both: not 2 x (burst + rate x time)
        assert got <= quota.requests_per_s * elapsed + quota.burst + 2 * lease
        assert got >= quota.requests_per_s * 0.6 + quota.burst * 0.5  # and it is served
        # another device has its own bucket, untouched by the flood
        assert all([await admitted(a, "quiet") for _ in range(quota.burst // 2)])


async def test_sessions_over_two_processes_stop_at_max_sessions_naming_the_setting(
    redis_url: str,  # noqa: F811
    prefix: str,
) -> None:
    quota = DeviceQuota(max_sessions=3)
    async with (
        process(quota, redis_url, prefix) as (a, _),
        process(quota, redis_url, prefix) as (b, _),
    ):
        la = [await a.enter_session("d"), await a.enter_session("d")]
        lb = await b.enter_session("d")
        for quotas in (a, b):
            with pytest.raises(ResourceExhausted) as info:
                await quotas.enter_session("d")
            assert "over all gateway processes" in info.value.message
            assert "limits.max_sessions_per_device = 3" in info.value.message
        await b.enter_session("other")  # another device is not affected
        la[0].close_session()
        await asyncio.sleep(0.1)  # the close reaches Redis in the background
        await b.enter_session("d")
        with pytest.raises(ResourceExhausted):
            await a.enter_session("d")
        lb.close_session()


async def test_a_crashed_process_releases_its_sessions_after_its_heartbeat_expires(
    redis_url: str,  # noqa: F811
    prefix: str,
) -> None:
    quota = DeviceQuota(max_sessions=2)
    async with process(quota, redis_url, prefix, ttl_s=0.6) as (a, _):
        crashed = RedisQuotas(quota, redis_url, prefix=prefix, heartbeat_ttl_s=0.6)
        await crashed.start()
        dead = DeviceQuotas(quota, ByteBudget(2**40), shared=crashed)
        await dead.enter_session("d")
        await dead.enter_session("d")
        assert crashed._task is not None
        crashed._task.cancel()  # the process dies: no heartbeat, no goodbye
        with pytest.raises(ResourceExhausted):
            await a.enter_session("d")
        await asyncio.sleep(0.8)
        await a.enter_session("d")
        await a.enter_session("d")
        await crashed._redis.aclose()


async def test_a_huge_or_binary_device_id_costs_one_fixed_size_key(
    redis_url: str,  # noqa: F811
    prefix: str,
) -> None:
    quota = DeviceQuota(max_sessions=2)
    async with process(quota, redis_url, prefix) as (a, _):
        for device in ("x" * 10_000, "\udcff\x00é\n" * 100):
            assert await admitted(a, device)
            await a.enter_session(device)
        client = aioredis.Redis.from_url(redis_url)
        keys = [k async for k in client.scan_iter(f"{prefix}:*")]
        await client.aclose()
        assert len(keys) == 5  # 2 buckets, 2 session hashes, 1 heartbeat
        assert max(len(k) for k in keys) < len(prefix) + 50


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with run_redis(own=True) as server:  # stopped and started by the test
        yield server


async def test_redis_stopped_falls_back_to_the_local_limits_then_shares_again(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    quota = DeviceQuota(max_sessions=2, requests_per_s=50.0, burst=20)
    async with process(quota, own_redis.url, prefix) as (a, shared):
        assert await admitted(a, "d")
        own_redis.stop()
        await asyncio.sleep(LEASE_S + 0.1)  # the lease runs out
        results = [await admitted(a, "d") for _ in range(40)]
        # served under the process-local bucket: its burst, no more, no exception
        assert 10 <= sum(results) <= quota.burst
        assert not shared.up
        await a.enter_session("d")  # counted locally while Redis is away
        await a.enter_session("d")
        with pytest.raises(ResourceExhausted):
            await a.enter_session("d")
        outages = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
        assert len(outages) == 1  # logged once per outage
        own_redis.start()
        deadline = time.monotonic() + 5
        while not shared.up and time.monotonic() < deadline:
            await admitted(a, "e")
            await asyncio.sleep(0.1)
        assert shared.up
        async with process(quota, own_redis.url, prefix) as (b, _):
            await asyncio.sleep(0.1)  # a's counts were written again on reconnecting
            with pytest.raises(ResourceExhausted) as info:
                await b.enter_session("d")
            assert "over all gateway processes" in info.value.message


async def test_two_gateways_refuse_a_device_past_its_shared_burst_naming_the_processes(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
) -> None:
    write_dev_pki(tmp_path / "certs", ["devA", "devB"])

    def settings() -> GatewaySettings:
        return GatewaySettings(
            models_dir=models_dir(tmp_path),
            server={"port": 0},
            metrics={"port": None},
            tls={"dir": tmp_path / "certs"},
            limits={"requests_per_s": 0.01, "burst": 3, "shared": True},
            stores={"backend": "redis", "redis_url": redis_url, "metadata_url": "none"},
        )

    async with Gateway(settings()) as one, Gateway(settings()) as two:
        async with _channel(one, "devA") as c1, _channel(two, "devA") as c2:
            k1, k2 = pb_grpc.GRPCInferenceServiceStub(c1), pb_grpc.GRPCInferenceServiceStub(c2)
            for stub in (k1, k2, k1):  # the burst of 3, spent over both processes
                assert (await _grpc_code(stub.ModelInfer(_model_infer())))[0] is OK
            for stub in (k1, k2):
                code, details = await _grpc_code(stub.ModelInfer(_model_infer()))
                assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "over all gateway processes (limits.requests_per_s)" in details
        async with _channel(two, "devB") as c3:  # another device: its own bucket
            k3 = pb_grpc.GRPCInferenceServiceStub(c3)
            assert (await _grpc_code(k3.ModelInfer(_model_infer())))[0] is OK
