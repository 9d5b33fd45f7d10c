"""A small, exact userspace link emulator: a TCP proxy that adds delay, jitter, loss-induced
retransmission delay, outages and (optionally) a bandwidth limit to every byte it forwards.

The kernel here has no netem qdisc, so delay and outages live in userspace; bandwidth is shaped by
tbf on the veth pair when the benchmark runs in network namespaces, or by this proxy's token
bucket on plain loopback. Approximations (stated in BENCHMARKS.md):

* Delay is applied per read chunk, in order: a chunk leaves at
  ``max(previous departure, arrival + one-way delay + jitter)`` so TCP's in-order stream is kept.
* Loss cannot be applied to a TCP byte stream without breaking it. A chunk "lost" with probability
  ``loss`` instead arrives one retransmission timeout (``rto``, 200 ms like Linux's minimum RTO)
  late, which is what the application sees when a segment is lost and retransmitted.
* An outage holds all bytes in both directions until it ends (a link that is down but not reset);
  new connections are accepted but carry nothing until the link returns.

Run: ``python -m benchmarks.e2e.linkem --listen 127.0.0.1:9000 --target 127.0.0.1:8000
--delay-ms 25 --jitter-ms 5`` (one-way delay: RTT = 2 × delay).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

CHUNK = 16 * 1024


@dataclass(frozen=True)
class Impairment:
    """One direction's impairments (both directions use the same impairment)."""

    delay_s: float = 0.0
    jitter_s: float = 0.0
    loss: float = 0.0
    rto_s: float = 0.2
    bandwidth_bps: float = 0.0  # 0 = unlimited (shaped elsewhere, e.g. tbf)
    outage_period_s: float = 0.0  # 0 = no outages
    outage_duration_s: float = 0.0
    seed: int = 0


@dataclass
class _Direction:
    impairment: Impairment
    start: float
    rng: random.Random
    last_departure: float = 0.0
    bucket_free_at: float = 0.0
    bytes: int = field(default=0)

    def outage_end(self, now: float) -> float:
        """When the outage covering ``now`` ends, or ``now`` if the link is up."""
        p = self.impairment
        if p.outage_period_s <= 0 or p.outage_duration_s <= 0:
            return now
        phase = (now - self.start) % p.outage_period_s
        down_from = p.outage_period_s - p.outage_duration_s
        return now + (p.outage_period_s - phase) if phase >= down_from else now

    def departure(self, arrival: float, size: int) -> float:
        p = self.impairment
        t = arrival
        if p.bandwidth_bps > 0:
            # Token bucket without burst: serialise each chunk at the link rate.
            t = max(t, self.bucket_free_at) + size * 8 / p.bandwidth_bps
            self.bucket_free_at = t
        t += p.delay_s + (self.rng.uniform(-p.jitter_s, p.jitter_s) if p.jitter_s else 0.0)
        if p.loss and self.rng.random() < p.loss:
            t += p.rto_s
        t = self.outage_end(max(t, self.outage_end(arrival)))
        t = max(t, self.last_departure)
        self.last_departure = t
        return t


class LinkEmulator:
    """Accepts TCP connections on ``listen`` and forwards them to ``target`` through the link."""

    def __init__(self, target: tuple[str, int], impairment: Impairment) -> None:
        self.target = target
        self.impairment = impairment
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._rng = random.Random(impairment.seed)
        self._start = time.monotonic()
        self.bytes_up = 0
        self.bytes_down = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for writer in list(self._writers):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self._writers.clear()

    async def __aenter__(self) -> LinkEmulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError as exc:
            log.warning("link emulator cannot reach %s: %s", self.target, exc)
            writer.close()
            return
        self._writers.update((writer, up_writer))
        for src, dst, up in ((reader, up_writer, True), (up_reader, writer, False)):
            direction = _Direction(self.impairment, self._start, random.Random(self._rng.random()))
            self._spawn(self._pump(src, dst, direction, up))

    async def _pump(
        self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, d: _Direction, up: bool
    ) -> None:
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(maxsize=1024)

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                if not data:
                    break
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                dst.write(data)
                await dst.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await src.read(CHUNK):
                if up:
                    self.bytes_up += len(data)
                else:
                    self.bytes_down += len(data)
                await line.put((d.departure(time.monotonic(), len(data)), data))
            await line.put((0.0, b""))
            await sender
        except (ConnectionError, asyncio.CancelledError):
            sender.cancel()
        finally:
            with contextlib.suppress(Exception):
                dst.close()


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


async def _serve(args: argparse.Namespace) -> None:
    impairment = Impairment(
        delay_s=args.delay_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
        loss=args.loss,
        bandwidth_bps=args.bandwidth_mbit * 1e6,
        outage_period_s=args.outage_period_s,
        outage_duration_s=args.outage_duration_s,
        seed=args.seed,
    )
    emulator = LinkEmulator(_hostport(args.target), impairment)
    host, port = _hostport(args.listen)
    bound = await emulator.start(host, port)
    print(bound, flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await emulator.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--target", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay")
    parser.add_argument("--jitter-ms", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--bandwidth-mbit", type=float, default=0.0, help="0 = unlimited")
    parser.add_argument("--outage-period-s", type=float, default=0.0)
    parser.add_argument("--outage-duration-s", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
