"""Stream client against the in-test SessionService over real loopback sockets."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest

from common.errors import DeadlineExceeded
from common.settings import nest
from edge_agent._convert import OutboundRequest
from edge_agent._features import encode_features
from edge_agent._settings import EdgeSettings
from edge_agent._stream import SessionClient, backoff_delay
from tests.unit.edge_agent._certs import make_certs
from tests.unit.edge_agent._fake_gateway import FakeGateway, start_server


def _req(n: int = 256, key: str | None = None, deadline_s: float = 5.0) -> OutboundRequest:
    feats = encode_features(np.arange(n, dtype=np.float32).reshape(1, n), "raw")
    return OutboundRequest(
        request_id=uuid.uuid4().hex,
        idempotency_key=key or uuid.uuid4().hex,
        model_name="m",
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


def test_backoff_grows_caps_and_jitters() -> None:
    delays = [backoff_delay(a, 0.1, 1.0, 0.5) for a in range(8)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert backoff_delay(10, 0.1, 1.0, 0.0) == 1.0
    assert backoff_delay(0, 0.1, 1.0, 0.0) == pytest.approx(0.1)


async def test_requests_share_one_stream_and_pings_measure_rtt() -> None:
    gw = FakeGateway(ping_interval_s=0.05)
    server, port = await start_server(gw)
    try:
        async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
            assert await client.wait_connected(5)
            reqs = [_req(3000 + i) for i in range(20)]  # several chunks each (4 KiB limit)
            answers = await asyncio.gather(*(client.submit(r) for r in reqs))
            assert [a.request_id for a in answers] == [r.request_id for r in reqs]
            assert all(not a.cached for a in answers)
            assert len(gw.hellos) == 1
            await asyncio.sleep(0.2)
            assert client.net.rtt_samples > 0 and gw.pings > 0
            assert client.metrics.sent == 20
    finally:
        await server.stop(None)


async def test_byte_credit_is_respected() -> None:
    gw = FakeGateway(initial_credit=5000)
    server, port = await start_server(gw)
    try:
        async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
            answers = await asyncio.gather(*(client.submit(_req(1000)) for _ in range(10)))
            assert len(answers) == 10  # 40 kB sent with a 5 kB window: credits were granted
    finally:
        await server.stop(None)


async def test_small_payloads_go_inline_when_the_gateway_takes_them() -> None:
    gw = FakeGateway(inline_payloads=True)
    server, port = await start_server(gw)
    try:
        async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
            small = [_req(64) for _ in range(5)]  # 256 B + frame header: one chunk's worth
            big = _req(3000)  # 12 kB: over the 4 KiB chunk limit
            answers = await asyncio.gather(*(client.submit(r) for r in [*small, big]))
            assert len(answers) == 6
            inline = {h.request_id for h in gw.headers if h.payload}
            assert inline == {r.request_id for r in small}
            assert gw.chunks == 3 and client.metrics.inline_sent == 5  # only big was chunked
            assert client.metrics.bytes_sent == sum(len(r.features.payload) for r in [*small, big])
    finally:
        await server.stop(None)


async def test_no_inline_payloads_to_a_gateway_without_them() -> None:
    gw = FakeGateway()  # an older gateway: Welcome.inline_payloads is false
    server, port = await start_server(gw)
    try:
        async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
            await asyncio.gather(*(client.submit(_req(64)) for _ in range(3)))
            assert not any(h.payload for h in gw.headers) and gw.chunks == 3
            assert client.metrics.inline_sent == 0
    finally:
        await server.stop(None)


async def test_inline_payloads_respect_the_byte_credit() -> None:
    # 5 kB of credit, refilled per answer: every request goes out, inline where credit allows.
    gw = FakeGateway(initial_credit=5000, inline_payloads=True)
    server, port = await start_server(gw)
    try:
        async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
            reqs = [_req(900) for _ in range(10)]  # 3.6 kB each: one chunk, at most one fits
            answers = await asyncio.gather(*(client.submit(r) for r in reqs))
            assert len(answers) == 10
            inline = sum(1 for h in gw.headers if h.payload)
            assert inline >= 1 and inline + gw.chunks == 10
            assert client.metrics.bytes_sent == sum(len(r.features.payload) for r in reqs)
    finally:
        await server.stop(None)


async def test_reconnect_resends_inline_payloads(tmp_path: Path) -> None:
    store = str(tmp_path / "idem.db")
    gw = FakeGateway(store=store, inline_payloads=True)
    gw.hold.clear()  # accept but do not answer
    server, port = await start_server(gw)
    async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
        assert await client.wait_connected(5)
        reqs = [_req(64) for _ in range(4)]
        futs = [client.submit(r) for r in reqs]
        while len(gw.headers) < 4:  # noqa: ASYNC110 - polls the test server's log
            await asyncio.sleep(0.01)
        await server.stop(None)
        gw2 = FakeGateway(store=store, inline_payloads=True)
        server2, _ = await start_server(gw2, port)
        try:
            answers = await asyncio.wait_for(asyncio.gather(*futs), 10)
            assert len(answers) == 4 and client.metrics.resent == 4
            assert all(h.payload for h in gw2.headers) and gw2.chunks == 0
            assert {h.payload_digest for h in gw2.headers} == {r.digest for r in reqs}
            assert set(gw2.store.computations().values()) == {1}
        finally:
            await server2.stop(None)


async def test_reconnect_resends_inflight_under_same_key(tmp_path: Path) -> None:
    store = str(tmp_path / "idem.db")
    gw = FakeGateway(store=store)
    gw.hold.clear()  # accept but do not answer
    server, port = await start_server(gw)
    async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
        assert await client.wait_connected(5)
        reqs = [_req(64) for _ in range(10)]
        futs = [client.submit(r) for r in reqs]
        while len(gw.headers) < 10:  # noqa: ASYNC110 - polls the test server's log
            await asyncio.sleep(0.01)
        await server.stop(None)
        gw2 = FakeGateway(store=store)
        server2, _ = await start_server(gw2, port)
        try:
            answers = await asyncio.wait_for(asyncio.gather(*futs), 10)
            assert {h.idempotency_key for h in gw2.headers} == {r.idempotency_key for r in reqs}
            assert len(answers) == 10
            assert client.metrics.resent == 10 and client.metrics.sessions == 2
            assert set(gw2.store.computations().values()) == {1}
        finally:
            await server2.stop(None)


async def test_drain_reconnects_and_unsent_requests_go_to_the_new_stream() -> None:
    gw = FakeGateway()
    server, port = await start_server(gw)
    try:
        async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
            assert await client.wait_connected(5)
            await gw.drain_all(reconnect_after_s=0.05)
            await asyncio.sleep(0.01)
            fut = client.submit(_req(16))
            answer = await asyncio.wait_for(fut, 5)
            assert answer.request_id
            assert client.metrics.drains == 1
            assert len(gw.hellos) == 2
    finally:
        await server.stop(None)


async def test_deadline_passed_before_sending_fails_fast() -> None:
    async with SessionClient("127.0.0.1:1", _settings()) as client:
        fut = client.submit(_req(16, deadline_s=-1))
        client.cancel("unknown")
        assert not client.connected and client.inflight == 1
    with pytest.raises(Exception):  # noqa: B017 - closed client fails what is left
        fut.result()


async def test_gateway_error_maps_to_error_hierarchy() -> None:
    gw = FakeGateway()
    server, port = await start_server(gw)
    try:
        async with SessionClient(f"127.0.0.1:{port}", _settings()) as client:
            req = _req(16, deadline_s=0.001)
            await asyncio.sleep(0.01)
            with pytest.raises(DeadlineExceeded):
                await asyncio.wait_for(client.submit(req), 5)
    finally:
        await server.stop(None)


async def test_mtls_device_identity_from_certificate(tmp_path: Path) -> None:
    pem = make_certs(tmp_path, device_id="device-42")
    creds = grpc.ssl_server_credentials(
        [(pem["gateway.key"], pem["gateway.pem"])],
        root_certificates=pem["ca.pem"],
        require_client_auth=True,
    )
    gw = FakeGateway()
    server, port = await start_server(gw, server_credentials=creds)
    client_creds = grpc.ssl_channel_credentials(pem["ca.pem"], pem["device.key"], pem["device.pem"])
    try:
        settings = _settings(
            **{"tls.insecure": False, "tls.dir": tmp_path, "tls.server_name": "localhost"}
        )
        async with SessionClient(f"127.0.0.1:{port}", settings, credentials=client_creds) as c:
            answer = await asyncio.wait_for(c.submit(_req(16)), 5)
            assert answer.request_id
        assert gw.device_ids == ["device-42"]
    finally:
        await server.stop(None)
