"""Issue 7 acceptance: durability with kill -9, gateway restart with 100 requests in flight,
tampered and corrupted queue files. The gateway here is the in-test SessionService whose
idempotency store is a SQLite file, so per-key computation counts survive its restarts."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge_agent import EdgeAgent, EdgeSettings, Reconciliation, Route
from tests.support.edge_bundle import images, make_bundle
from tests.unit.edge_agent._fake_gateway import FakeGateway, start_server

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gateway_proc(port: int, store: Path, bundle: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.unit.edge_agent._fake_gateway",
            "--port",
            str(port),
            "--store",
            str(store),
            "--bundle",
            str(bundle),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == f"PORT {port}"
    return proc


def _agent_proc(
    bundle: Path, port: int, replay: Path, key: Path, skip: Path, n: int
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.edge_agent._agent_proc",
            "--bundle",
            str(bundle),
            "--gateway",
            f"127.0.0.1:{port}",
            "--replay",
            str(replay),
            "--key-file",
            str(key),
            "--count",
            str(n),
            "--skip",
            str(skip),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _computations(store: Path) -> dict[str, int]:
    if not store.exists():
        return {}
    db = sqlite3.connect(store)
    try:
        return dict(db.execute("SELECT key, computations FROM results").fetchall())
    except sqlite3.OperationalError:
        return {}
    finally:
        db.close()


def _kill(proc: subprocess.Popen[str]) -> str:
    """kill -9, then return what the process had written and close its pipe."""
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    if proc.stdout is None:
        return ""
    try:
        return proc.stdout.read()
    finally:
        proc.stdout.close()


@pytest.mark.slow
def test_durability_kill9_agent_and_gateway_restart_exactly_once(tmp_path: Path) -> None:
    n = 1000
    bundle = make_bundle(tmp_path / "bundle", thresholds=(0.99, 0.99, 0.0))
    (tmp_path / "secrets").mkdir()
    key = tmp_path / "secrets" / "replay.key"
    key.write_text(os.urandom(32).hex())
    replay, store, skip = tmp_path / "q" / "replay.db", tmp_path / "gw.db", tmp_path / "acked"
    port = _free_port()
    acked: set[int] = set()

    def record(line: str) -> None:
        if line.startswith("ACK "):
            acked.add(int(line.split()[1]))
            return

    # 1. Gateway down: the agent queues; kill -9 once half the requests are acknowledged.
    a = _agent_proc(bundle, port, replay, key, skip, n)
    assert a.stdout is not None
    routes = set()
    while len(acked) < n // 2:
        line = a.stdout.readline()
        assert line, "agent A exited early"
        record(line)
        routes.add(line.split()[2])
    _kill(a)
    assert routes == {"deferred"}
    skip.write_text(" ".join(map(str, sorted(acked))))

    # 2. Gateway up; a new agent drains the queue and sends the rest; kill both mid-way.
    gw = _gateway_proc(port, store, bundle)
    b = _agent_proc(bundle, port, replay, key, skip, n)
    deadline = time.monotonic() + 60
    while len(_computations(store)) < 300 and time.monotonic() < deadline:
        time.sleep(0.02)
    rest = _kill(b)
    _kill(gw)
    for line in rest.splitlines():
        record(line)
    skip.write_text(" ".join(map(str, sorted(acked))))

    # 3. Restart both; the agent finishes.
    gw = _gateway_proc(port, store, bundle)
    try:
        c = _agent_proc(bundle, port, replay, key, skip, n)
        out, _ = c.communicate(timeout=90)
        assert c.returncode == 0 and "DONE" in out, out[-2000:]
    finally:
        _kill(gw)
    counts = _computations(store)
    assert sorted(counts) == sorted(f"req-{i}" for i in range(n)), "every request delivered"
    assert set(counts.values()) == {1}, "each computed exactly once"


async def test_gateway_restart_with_100_in_flight_completes_or_falls_back(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path / "bundle", thresholds=(0.99, 0.99, 0.0))
    gw = FakeGateway(bundle=bundle, store=str(tmp_path / "gw.db"), max_inflight=128)
    gw.hold.clear()
    server, port = await start_server(gw)
    settings = EdgeSettings(
        bundle=bundle,
        gateway=f"127.0.0.1:{port}",
        tls={"insecure": True},
        session={"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        cache={"entries": 0},
        routing={"sla_ms": 1500},
    )
    async with EdgeAgent(settings) as agent:
        assert await agent.wait_connected(5)
        imgs = images(100, seed=3)
        t0 = time.monotonic()
        # Half of the requests get a deadline shorter than the outage.
        tasks = [
            asyncio.create_task(agent.infer(im, deadline_ms=300 if i % 2 else 1500))
            for i, im in enumerate(imgs)
        ]
        while len(gw.headers) < 100:  # noqa: ASYNC110 - polls the test server's log
            await asyncio.sleep(0.01)
        await server.stop(None)  # hard stop with everything in flight
        await asyncio.sleep(0.4)
        gw2 = FakeGateway(bundle=bundle, store=str(tmp_path / "gw.db"))
        server2, _ = await start_server(gw2, port)
        try:
            results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        finally:
            await server2.stop(None)
        elapsed = time.monotonic() - t0
    assert len(results) == 100 and elapsed < 5
    for i, r in enumerate(results):
        assert r.route in (Route.CLOUD, Route.EDGE_FALLBACK)
        limit = 300 if i % 2 else 1500
        assert r.timing.total_ms <= limit + 250, (
            i,
            r.timing.total_ms,
        )  # deadline + scheduling slack
        if i % 2:
            assert r.route is Route.EDGE_FALLBACK
    assert any(r.route is Route.CLOUD for r in results)  # long deadlines made it after restart
    assert set(gw2.store.computations().values()) <= {1}


async def test_tampered_and_corrupted_queue_detected_reported_and_agent_keeps_running(
    tmp_path: Path,
) -> None:
    bundle = make_bundle(tmp_path / "bundle", thresholds=(0.99, 0.99, 0.0))
    key = os.urandom(32).hex()
    replay = tmp_path / "q" / "replay.db"
    port = _free_port()
    base: dict[str, Any] = dict(
        bundle=bundle,
        gateway=f"127.0.0.1:{port}",
        tls={"insecure": True},
        replay={"path": replay, "key": key},
        session={"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        cache={"entries": 0},
    )
    async with EdgeAgent(EdgeSettings(**base)) as agent:  # type: ignore[arg-type]
        for i, im in enumerate(images(10)):
            assert (await agent.infer(im, idempotency_key=f"k{i}")).route is Route.DEFERRED
    db = sqlite3.connect(replay)
    body = bytearray(
        db.execute("SELECT body FROM entries WHERE idempotency_key='k3'").fetchone()[0]
    )
    body[-1] ^= 1  # flips a bit of the GCM tag
    db.execute("UPDATE entries SET body=? WHERE idempotency_key='k3'", (bytes(body),))
    db.execute("UPDATE entries SET created_at=0, idempotency_key='k99' WHERE idempotency_key='k7'")
    db.commit()
    db.close()
    reports: list[Reconciliation] = []
    gw = FakeGateway(bundle=bundle)
    server, _ = await start_server(gw, port)
    try:
        async with EdgeAgent(EdgeSettings(**base), on_reconcile=reports.append) as agent:  # type: ignore[arg-type]
            for _ in range(300):
                if len(reports) >= 10:
                    break
                await asyncio.sleep(0.02)
            lost = sorted(r.idempotency_key for r in reports if r.status == "lost")
            delivered = sorted(r.idempotency_key for r in reports if r.status == "delivered")
            assert lost == ["k3", "k99"]
            assert delivered == sorted(f"k{i}" for i in range(10) if i not in (3, 7))
            assert agent.metrics()["replay"]["lost"] == 2
            assert (await agent.infer(images(1, seed=9)[0])).route is Route.CLOUD  # still running
        # A file SQLite cannot read: moved aside, reported, a fresh queue starts.
        for p in replay.parent.iterdir():
            p.write_bytes(os.urandom(8192))
        reports.clear()
        async with EdgeAgent(EdgeSettings(**base), on_reconcile=reports.append) as agent:  # type: ignore[arg-type]
            assert [r.status for r in reports] == ["lost"] and "unreadable" in reports[0].detail
            assert await agent.wait_connected(5)
            assert (await agent.infer(images(1, seed=10)[0])).route is Route.CLOUD
    finally:
        await server.stop(None)
