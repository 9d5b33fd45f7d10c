"""Stream client against the real gateway (cloud Gateway: SessionServicer + SessionCore over the
data plane), in-process on loopback sockets; a TCP proxy loses connections the way a crash does."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from cloud.stores import MemoryIdempotencyStore
from common.auth import write_dev_pki
from common.errors import DeadlineExceeded
from common.settings import nest
from edge_agent._convert import OutboundRequest
from edge_agent._features import encode_features
from edge_agent._settings import EdgeSettings
from edge_agent._stream import SessionClient, backoff_delay
from tests.support.gateway import VECTOR_MODEL, LiveGateway, running_gateway
from tests.support.proxy import TcpProxy

SMALL_CHUNKS: dict[str, Any] = {"max_chunk_bytes": 4096}
"""Gateway session limits under which a few kB already take several chunks."""


def _req(n: int = 256, key: str | None = None, deadline_s: float = 5.0) -> OutboundRequest:
    feats = encode_features(np.arange(n, dtype=np.float32).reshape(1, n), "raw")
    return OutboundRequest(
        request_id=uuid.uuid4().hex,
        idempotency_key=key or uuid.uuid4().hex,
        model_name=VECTOR_MODEL,
        model_version="",
        cut_point="",
        features=feats,
        deadline=time.time() + deadline_s,
        digest=hashlib.sha256(feats.payload).digest(),
    )


def _settings(**kw: object) -> EdgeSettings:
    """Settings for a test client; ``kw`` overrides dotted keys (``"tls.dir"``)."""
    base: dict[str, object] = {
        "tls.insecure": True,
        "session.backoff_initial_s": 0.02,
        "session.backoff_max_s": 0.2,
    }
    return EdgeSettings(**nest({**base, **kw}))


def _computed(*gateways: LiveGateway) -> Counter[str]:
    """Computations per idempotency key over gateways that shared one store."""
    total: Counter[str] = Counter()
    for gw in gateways:
        total.update(gw.computations())
    return total


async def _headers_seen(gw: LiveGateway, n: int) -> None:
    while len(gw.frames.headers) < n:  # noqa: ASYNC110 - polls the gateway's frame log
        await asyncio.sleep(0.01)


def test_backoff_grows_caps_and_jitters() -> None:
    delays = [backoff_delay(a, 0.1, 1.0, 0.5) for a in range(8)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert backoff_delay(10, 0.1, 1.0, 0.0) == 1.0
    assert backoff_delay(0, 0.1, 1.0, 0.0) == pytest.approx(0.1)


async def test_requests_share_one_stream_and_pings_measure_rtt(gateway_models_dir: Path) -> None:
    session = {**SMALL_CHUNKS, "ping_interval_s": 0.05}
    async with running_gateway(gateway_models_dir, session=session) as gw:
        async with SessionClient(gw.address, _settings()) as client:
            assert await client.wait_connected(5)
            reqs = [_req(3000 + i) for i in range(20)]  # several chunks each (4 KiB limit)
            answers = await asyncio.gather(*(client.submit(r) for r in reqs))
            assert [a.request_id for a in answers] == [r.request_id for r in reqs]
            assert all(not a.cached for a in answers)
            assert len(gw.frames.hellos) == 1
            assert len(gw.records) == 20 and len({r.session_id for r in gw.records}) == 1
            await asyncio.sleep(0.2)
            assert client.net.rtt_samples > 0 and gw.frames.pings > 0
            assert client.metrics.sent == 20


async def test_byte_credit_is_respected(gateway_models_dir: Path) -> None:
    session = {**SMALL_CHUNKS, "buffer_bytes": 5000}  # the initial byte credit
    async with running_gateway(gateway_models_dir, session=session) as gw:
        async with SessionClient(gw.address, _settings()) as client:
            answers = await asyncio.gather(*(client.submit(_req(1000)) for _ in range(10)))
            assert len(answers) == 10  # 40 kB sent with a 5 kB window: credits were granted
            assert [r.status for r in gw.records] == ["OK"] * 10  # none refused for credit


async def test_small_payloads_go_inline_when_the_gateway_takes_them(
    gateway_models_dir: Path,
) -> None:
    async with running_gateway(gateway_models_dir, session=SMALL_CHUNKS) as gw:
        async with SessionClient(gw.address, _settings()) as client:
            small = [_req(64) for _ in range(5)]  # 256 B + frame header: one chunk's worth
            big = _req(3000)  # 12 kB: over the 4 KiB chunk limit
            answers = await asyncio.gather(*(client.submit(r) for r in [*small, big]))
            assert len(answers) == 6
            inline = {h.request_id for h in gw.frames.headers if h.payload}
            assert inline == {r.request_id for r in small}
            assert gw.frames.chunks == 3 and client.metrics.inline_sent == 5  # only big chunked
            assert client.metrics.bytes_sent == sum(len(r.features.payload) for r in [*small, big])


async def test_no_inline_payloads_to_a_gateway_without_them(gateway_models_dir: Path) -> None:
    # A gateway from before inline payloads: its Welcome leaves inline_payloads false.
    async with running_gateway(
        gateway_models_dir, inline_payloads=False, session=SMALL_CHUNKS
    ) as gw:
        async with SessionClient(gw.address, _settings()) as client:
            await asyncio.gather(*(client.submit(_req(64)) for _ in range(3)))
            assert not any(h.payload for h in gw.frames.headers) and gw.frames.chunks == 3
            assert client.metrics.inline_sent == 0


async def test_inline_payloads_respect_the_byte_credit(gateway_models_dir: Path) -> None:
    # 5 kB of credit, refilled as answers leave: every request goes out, inline where credit allows.
    session = {**SMALL_CHUNKS, "buffer_bytes": 5000}
    async with running_gateway(gateway_models_dir, session=session) as gw:
        async with SessionClient(gw.address, _settings()) as client:
            reqs = [_req(900) for _ in range(10)]  # 3.6 kB each: one chunk, at most one fits
            answers = await asyncio.gather(*(client.submit(r) for r in reqs))
            assert len(answers) == 10
            inline = sum(1 for h in gw.frames.headers if h.payload)
            assert inline >= 1 and inline + gw.frames.chunks == 10
            assert client.metrics.bytes_sent == sum(len(r.features.payload) for r in reqs)


async def test_reconnect_resends_inline_payloads(gateway_models_dir: Path) -> None:
    store = MemoryIdempotencyStore()  # shared by both gateways, as replicas share Redis
    async with TcpProxy() as proxy:
        async with running_gateway(
            gateway_models_dir, idempotency=store, hold=True, session=SMALL_CHUNKS
        ) as gw:  # accepts but does not answer
            proxy.target = gw.port
            async with SessionClient(proxy.address, _settings()) as client:
                assert await client.wait_connected(5)
                reqs = [_req(64) for _ in range(4)]
                futs = [client.submit(r) for r in reqs]
                await _headers_seen(gw, 4)
                proxy.target = None
                proxy.drop()  # the gateway "crashes": connections reset, nothing answered
                await gw.stop()
                async with running_gateway(
                    gateway_models_dir, idempotency=store, session=SMALL_CHUNKS
                ) as gw2:
                    proxy.target = gw2.port
                    answers = await asyncio.wait_for(asyncio.gather(*futs), 10)
                    assert len(answers) == 4 and client.metrics.resent == 4
                    assert all(h.payload for h in gw2.frames.headers) and gw2.frames.chunks == 0
                    assert {h.payload_digest for h in gw2.frames.headers} == {
                        r.digest for r in reqs
                    }
                    computed = _computed(gw, gw2)
                    assert computed == {r.idempotency_key: 1 for r in reqs}


async def test_reconnect_resends_inflight_under_same_key(gateway_models_dir: Path) -> None:
    store = MemoryIdempotencyStore()
    # Header + chunks (no inline payloads): the resend path for chunked requests.
    gateway: dict[str, Any] = {"idempotency": store, "inline_payloads": False}
    async with TcpProxy() as proxy:
        async with running_gateway(gateway_models_dir, hold=True, **gateway) as gw:
            proxy.target = gw.port
            async with SessionClient(proxy.address, _settings()) as client:
                assert await client.wait_connected(5)
                reqs = [_req(64) for _ in range(10)]
                futs = [client.submit(r) for r in reqs]
                await _headers_seen(gw, 10)
                proxy.target = None
                proxy.drop()
                await gw.stop()
                async with running_gateway(gateway_models_dir, **gateway) as gw2:
                    proxy.target = gw2.port
                    answers = await asyncio.wait_for(asyncio.gather(*futs), 10)
                    keys = {r.idempotency_key for r in reqs}
                    assert {h.idempotency_key for h in gw2.frames.headers} == keys
                    assert len(answers) == 10
                    assert client.metrics.resent == 10 and client.metrics.sessions == 2
                    assert _computed(gw, gw2) == dict.fromkeys(keys, 1)


async def test_drain_reconnects_and_unsent_requests_go_to_the_new_stream(
    gateway_models_dir: Path,
) -> None:
    async with running_gateway(gateway_models_dir) as gw:
        async with SessionClient(gw.address, _settings()) as client:
            assert await client.wait_connected(5)
            await gw.stop()  # the gateway's shutdown: Drain, then the port closes
            async with running_gateway(gateway_models_dir, gw.port) as gw2:
                fut = client.submit(_req(16))
                answer = await asyncio.wait_for(fut, 5)
                assert answer.request_id
                assert [r.request_id for r in gw2.records] == [answer.request_id]
                assert client.metrics.drains == 1
                assert len(gw.frames.hellos) + len(gw2.frames.hellos) == 2


async def test_deadline_passed_before_sending_fails_fast() -> None:
    async with SessionClient("127.0.0.1:1", _settings()) as client:
        fut = client.submit(_req(16, deadline_s=-1))
        client.cancel("unknown")
        assert not client.connected and client.inflight == 1
    with pytest.raises(Exception):  # noqa: B017 - closed client fails what is left
        fut.result()


async def test_gateway_error_maps_to_error_hierarchy(gateway_models_dir: Path) -> None:
    async with running_gateway(gateway_models_dir) as gw:
        async with SessionClient(gw.address, _settings()) as client:
            req = _req(16, deadline_s=0.001)
            await asyncio.sleep(0.01)
            with pytest.raises(DeadlineExceeded):
                await asyncio.wait_for(client.submit(req), 5)


async def test_mtls_device_identity_from_certificate(
    gateway_models_dir: Path, tmp_path: Path
) -> None:
    write_dev_pki(tmp_path, ["device-42"], hosts=["localhost", "127.0.0.1"])
    read = lambda name: (tmp_path / name).read_bytes()  # noqa: E731
    client_creds = grpc.ssl_channel_credentials(
        read("ca.pem"), read("device-42.key"), read("device-42.pem")
    )
    async with running_gateway(gateway_models_dir, tls_dir=tmp_path) as gw:
        # No device id in Hello: the gateway takes the one the certificate names.
        tls = {"tls.insecure": False, "tls.dir": tmp_path, "tls.server_name": "localhost"}
        settings = _settings(device_id="", **tls)
        async with SessionClient(gw.address, settings, credentials=client_creds) as c:
            answer = await asyncio.wait_for(c.submit(_req(16)), 5)
            assert answer.request_id
        assert [r.device_id for r in gw.records] == ["device-42"]
