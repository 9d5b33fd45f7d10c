"""Issue 13, keepalive enforcement: a client that pings too often is cut off, the others are not.

HTTP/2 PING frames cost the server an answer each and are not rate limited by anything the
gateway's handlers see. The gateway counts a ping that comes sooner than
``server.min_client_ping_interval_s`` (5 s) after the previous one as a strike and, past
``server.max_ping_strikes`` (2), ends the connection with GOAWAY ENHANCE_YOUR_CALM
("too_many_pings"). grpc's own clients back off and never ping that fast, so the attacker here
speaks raw HTTP/2 (h2) over the same mTLS a device uses.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
from h2.errors import ErrorCodes

from tests.adversarial._attack import under_attack
from tests.adversarial._infer import reference_logits
from tests.adversarial._served import Probe, ServedGateway

MAX_PING_STRIKES = 2  # server.max_ping_strikes default
FLOODERS = 10
"""Connections pinging as fast as they can at once; each reconnects when cut off."""
ATTACK_S = 3.0


@dataclass
class Cutoff:
    """How one ping-flooding connection ended."""

    pings: int
    """PINGs sent before the GOAWAY arrived."""
    seconds: float
    error: ErrorCodes | int | None
    debug: bytes
    closed: bool
    """The gateway closed the TCP connection after its GOAWAY."""


def _tls(gw: ServedGateway, device: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(gw.pki / "ca.pem"))
    ctx.load_cert_chain(gw.pki / f"{device}.pem", gw.pki / f"{device}.key")
    ctx.check_hostname = False  # the chain is verified; the dev certificate names no 127.0.0.1
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def _ping_flood(gw: ServedGateway, device: str, interval_s: float = 0.01) -> Cutoff:
    """Open an HTTP/2 connection as ``device`` and send PINGs every ``interval_s`` (no streams)
    until the gateway sends GOAWAY (or 5 s pass)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port, ssl=_tls(gw, device))
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    writer.write(conn.data_to_send())
    pings, t0 = 0, time.monotonic()
    ended: h2.events.ConnectionTerminated | None = None
    try:
        while ended is None and time.monotonic() - t0 < 5.0:
            conn.ping(os.urandom(8))
            pings += 1
            writer.write(conn.data_to_send())
            await writer.drain()
            try:
                data = await asyncio.wait_for(reader.read(65536), interval_s)
            except TimeoutError:
                continue
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    ended = event
            writer.write(conn.data_to_send())  # SETTINGS and PING acks
        seconds = time.monotonic() - t0
        try:
            closed = await asyncio.wait_for(reader.read(65536), 2.0) == b""
        except (TimeoutError, ConnectionError):
            closed = False
    finally:
        writer.close()
    if ended is None:
        return Cutoff(pings, seconds, None, b"", closed)
    return Cutoff(pings, seconds, ended.error_code, ended.additional_data or b"", closed)


async def _keep_flooding(gw: ServedGateway, device: str, until: float) -> list[Cutoff]:
    """Flood pings, reconnect when cut off, until ``until``."""
    cutoffs = []
    while time.monotonic() < until:
        cutoffs.append(await _ping_flood(gw, device))
    return cutoffs


async def test_a_client_that_pings_too_often_gets_goaway_and_others_do_not(
    served: ServedGateway, legit: Probe
) -> None:
    async with served.aio_channel("attacker") as polite:
        expected = await reference_logits(polite)
        with under_attack(f"{FLOODERS} connections flooding HTTP/2 PINGs", served, legit):
            until = time.monotonic() + ATTACK_S
            cutoffs = [
                c
                for cs in await asyncio.gather(
                    *(_keep_flooding(served, "attacker", until) for _ in range(FLOODERS))
                )
                for c in cs
            ]
            # The same device's well-behaved connection is still served meanwhile.
            answer = await reference_logits(polite)
    pings = sorted(c.pings for c in cutoffs)
    print(
        f"{len(cutoffs)} connections cut off; pings before GOAWAY {pings[0]}-{pings[-1]}, "
        f"after {max(c.seconds for c in cutoffs) * 1e3:.0f} ms at most"
    )
    for c in cutoffs:
        assert c.error == ErrorCodes.ENHANCE_YOUR_CALM, c
        assert c.debug == b"too_many_pings", c
        # The first ping is free, then MAX_PING_STRIKES strikes are tolerated (pings may be in
        # flight when the GOAWAY is sent, hence the slack).
        assert MAX_PING_STRIKES + 2 <= c.pings <= MAX_PING_STRIKES + 6, c
        assert c.seconds < 1.0, c
        assert c.closed, c
    assert (answer == expected).all()
