"""The link emulator's schedule is exact, and it forwards bytes intact in both directions."""

from __future__ import annotations

import asyncio
import hashlib
import random

import pytest

from benchmarks.e2e.linkem import Impairment, LinkEmulator, _Direction


def _direction(**kw: float) -> _Direction:
    return _Direction(Impairment(**kw), start=0.0, rng=random.Random(0))  # type: ignore[arg-type]


def test_delay_is_added_and_order_is_kept() -> None:
    d = _direction(delay_s=0.025, jitter_s=0.01)
    departures = [d.departure(t / 1000, 100) for t in range(200)]
    assert departures == sorted(departures)
    assert all(dep - t / 1000 >= 0.015 - 1e-12 for t, dep in enumerate(departures))
    assert all(dep - t / 1000 <= 0.035 + 0.01 for t, dep in enumerate(departures))


def test_bandwidth_serialises_chunks_at_the_link_rate() -> None:
    d = _direction(bandwidth_bps=8_000_000)  # 1 MB/s
    last = 0.0
    for _ in range(10):
        last = d.departure(0.0, 100_000)
    assert last == pytest.approx(1.0)


def test_outage_holds_bytes_until_the_link_returns() -> None:
    d = _direction(outage_period_s=10.0, outage_duration_s=2.0, delay_s=0.01)
    assert d.departure(1.0, 10) == pytest.approx(1.01)
    assert d.departure(8.5, 10) == pytest.approx(10.0)  # sent while down: leaves when up
    assert d.departure(10.5, 10) == pytest.approx(10.51)


def test_loss_costs_one_retransmission_timeout() -> None:
    d = _direction(loss=1.0, rto_s=0.2)
    assert d.departure(0.0, 10) == pytest.approx(0.2)
    never = _direction(loss=0.0, rto_s=0.2)
    assert never.departure(0.0, 10) == 0.0


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


async def test_forwards_bytes_intact_both_ways() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    emulator = LinkEmulator(("127.0.0.1", port), Impairment(delay_s=0.002, jitter_s=0.001, seed=3))
    listen = await emulator.start()
    payload = random.Random(1).randbytes(300_000)
    reader, writer = await asyncio.open_connection("127.0.0.1", listen)
    writer.write(payload)
    await writer.drain()
    received = await reader.readexactly(len(payload))
    writer.close()
    await writer.wait_closed()
    await emulator.close()
    server.close()
    await server.wait_closed()
    await asyncio.sleep(0.05)  # let the echo handler see EOF and close its side
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
    assert emulator.bytes_up == len(payload) and emulator.bytes_down == len(payload)
