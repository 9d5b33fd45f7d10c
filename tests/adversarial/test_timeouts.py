"""Issue 13, attack 7 (timeouts): streams and connections that say nothing are ended.

Before: a stream that never sent Hello never timed out and was not counted in ``open_streams``;
500 silent TCP connections were still open after 100 s. Now: Hello within
``session.hello_timeout_s`` (else DEADLINE_EXCEEDED, counted while open), a session idle for
``session.idle_timeout_s`` is ended, a connection that does not finish its handshake within
``server.handshake_timeout_s`` is closed, an established connection without RPCs is closed after
``server.max_connection_idle_s``. This module's gateway runs with short timeouts (below).
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aiml021.session.v1 import session_pb2_grpc

from tests.adversarial._attack import under_attack
from tests.adversarial._client import open_session
from tests.adversarial._served import Probe, ServedGateway, probe, serve

HELLO_S, IDLE_S, HANDSHAKE_S, CONN_IDLE_S = 1.0, 2.0, 1.0, 2.0
STRICT = {
    "AIML021_GATEWAY_SESSION__HELLO_TIMEOUT_S": str(HELLO_S),
    "AIML021_GATEWAY_SESSION__IDLE_TIMEOUT_S": str(IDLE_S),
    "AIML021_GATEWAY_SERVER__HANDSHAKE_TIMEOUT_S": str(HANDSHAKE_S),
    "AIML021_GATEWAY_SERVER__MAX_CONNECTION_IDLE_S": str(CONN_IDLE_S),
}


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[ServedGateway]:
    with serve(tmp_path_factory.mktemp("strict"), pki, STRICT) as gw:
        yield gw


@pytest.fixture(scope="module")
def strict_legit(strict: ServedGateway) -> Iterator[Probe]:
    with probe(strict) as p:
        yield p


def _open_session_streams(gw: ServedGateway) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith('aiml021_gateway_open_streams{kind="session"}'):
                return float(line.split()[-1])
    return 0.0


async def test_a_stream_that_never_says_hello_is_counted_then_ended(
    strict: ServedGateway, strict_legit: Probe
) -> None:
    with under_attack("stream without Hello", strict, strict_legit):
        async with strict.aio_channel("attacker") as ch:
            before = await asyncio.to_thread(_open_session_streams, strict)
            call = session_pb2_grpc.SessionServiceStub(ch).Connect()
            t0 = time.monotonic()
            await asyncio.sleep(0.5)
            during = await asyncio.to_thread(_open_session_streams, strict)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(call.read(), HELLO_S + 5)
            waited = time.monotonic() - t0
    assert during == before + 1, "the stream is counted in open_streams before its Hello"
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "session.hello_timeout_s" in (info.value.details() or "")
    assert waited < HELLO_S + 1.0


async def test_an_idle_session_is_ended(strict: ServedGateway, strict_legit: Probe) -> None:
    with under_attack("idle session", strict, strict_legit):
        async with strict.aio_channel("attacker") as ch:
            opened = await open_session(ch)
            assert opened.welcomed
            t0 = time.monotonic()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                while True:  # Credit/Welcome frames may come first
                    await asyncio.wait_for(opened.call.read(), IDLE_S + 5)
            waited = time.monotonic() - t0
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "session.idle_timeout_s" in (info.value.details() or "")
    assert IDLE_S - 0.5 < waited < IDLE_S + 1.0


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(4096) == b""
    except ConnectionError:
        return True


def test_500_silent_tcp_connections_are_closed(strict: ServedGateway, strict_legit: Probe) -> None:
    with under_attack("500 silent TCP connections", strict, strict_legit) as report:
        socks = [socket.create_connection(("127.0.0.1", strict.port)) for _ in range(500)]
        opened = time.monotonic()
        report.rss_peak_mb = strict.rss_mb()
        open_socks = set(socks)
        last_closed = opened
        try:
            while open_socks and time.monotonic() - opened < HANDSHAKE_S + 5:
                readable, _, _ = select.select(list(open_socks), [], [], 0.2)
                for s in readable:
                    if _closed(s):
                        open_socks.discard(s)
                        last_closed = time.monotonic()
        finally:
            for s in socks:
                s.close()
    print(f"{500 - len(open_socks)} of 500 closed by the gateway, the last after "
          f"{last_closed - opened:.2f} s")  # fmt: skip
    assert not open_socks, f"{len(open_socks)} silent connections still open"
    assert last_closed - opened < HANDSHAKE_S + 1.0


async def test_a_connection_without_rpcs_is_closed(strict: ServedGateway) -> None:
    async with strict.aio_channel("attacker") as ch:
        await asyncio.wait_for(ch.channel_ready(), 5)
        t0 = time.monotonic()
        state = ch.get_state()
        while state is grpc.ChannelConnectivity.READY and time.monotonic() - t0 < CONN_IDLE_S + 5:
            await asyncio.wait_for(ch.wait_for_state_change(state), CONN_IDLE_S + 5)
            state = ch.get_state()
        waited = time.monotonic() - t0
    assert state is not grpc.ChannelConnectivity.READY  # the gateway sent GOAWAY
    assert waited < CONN_IDLE_S + 1.5
