"""Issue 13, attack 4: a device that does not read its answers cannot grow the gateway's memory.

Before: 400 chunks with 1 MiB request ids plus 300k pings, never reading, took RSS from 167 MB to
1.26 GB, freed only on disconnect. Now each stream's outbound queue is bounded
(``session.max_outbound_bytes``): past it the gateway stops reading the device's frames, and a
queue still full after ``session.outbound_stall_s`` ends the stream with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import grpc
import pytest
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from tests.adversarial._attack import MAX_ATTACK_S, under_attack
from tests.adversarial._frames import chunk, hello, ping
from tests.adversarial._served import Probe, ServedGateway, probe, serve

STALL_S = 2.0  # session.outbound_stall_s default
BIG_ID = "x" * (1 << 20)
"""A 1 MiB request id: every answer that echoes it is 1 MiB."""
LONG_IDS = {"AIML021_GATEWAY_SERVER__MAX_REQUEST_ID_BYTES": str(2 << 20)}
"""By default ids over 256 bytes end the stream at once (tests/adversarial/test_bad_requests.py);
this module's gateway accepts them so that the outbound queue is what stops the attack."""


@pytest.fixture(scope="module")
def lenient(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[ServedGateway]:
    with serve(tmp_path_factory.mktemp("long_ids"), pki, LONG_IDS) as gw:
        yield gw


@pytest.fixture(scope="module")
def lenient_legit(lenient: ServedGateway) -> Iterator[Probe]:
    with probe(lenient) as p:
        yield p


def test_a_device_that_never_reads_is_cut_off_and_its_memory_returned(
    lenient: ServedGateway, lenient_legit: Probe
) -> None:
    served, legit = lenient, lenient_legit
    big_ids = 400
    progress = {"written": 0, "last": time.monotonic()}

    def flood() -> Generator[session_pb2.ConnectRequest]:
        yield hello()
        for i in range(big_ids + 300_000):
            yield chunk(f"{BIG_ID}{i}", 0, b"x", True) if i < big_ids else ping(i)
            progress["written"] += 1  # the library took the previous frame
            progress["last"] = time.monotonic()

    name = f"never reads: {big_ids} x 1 MiB ids + 300k pings"
    # The synchronous client: grpc.aio's client reports its own INTERNAL instead of the
    # gateway's status when one of its writes is still pending as the stream ends.
    with under_attack(name, served, legit) as report:
        with grpc.secure_channel(served.address, served.credentials("attacker")) as ch:
            frames = flood()
            answers = session_pb2_grpc.SessionServiceStub(ch).Connect(frames)
            started = time.monotonic()
            # Until the gateway stops taking frames (or the attack's time is up).
            while not answers.done() and time.monotonic() - started < MAX_ATTACK_S - 3:
                if time.monotonic() - progress["last"] > STALL_S + 0.5:
                    break
                report.rss_peak_mb = max(report.rss_peak_mb, served.rss_mb())
                time.sleep(0.1)
            stalled_at = progress["last"]
            # Now read what was sent before the cut, then the status.
            with contextlib.suppress(grpc.RpcError):
                for _ in answers:
                    pass
            status_at = time.monotonic()
            code, details = answers.code(), answers.details()
        frames.close()  # now, not whenever the garbage collector finds it
    print(f"attacker wrote {progress['written']} frames; {code} {details!r}")
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, details)
    assert "does not read its answers" in (details or "")
    assert progress["written"] < big_ids + 300_000, (
        "the gateway kept reading a device that does not read"
    )
    # The status was there when the device looked: its cut-off came STALL_S after the stall.
    assert status_at - stalled_at < STALL_S + 1.0 + 1.0
