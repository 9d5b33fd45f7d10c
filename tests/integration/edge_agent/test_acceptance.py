"""Issue 7 acceptance against the real gateway: durability with kill -9 of agents and of a gateway
(``aiml021 serve`` processes over one real Redis), a gateway restart with 100 requests in flight,
tampered and corrupted queue files.

Computations per key come from the gateways' own records (in-process) or from the Redis
idempotency store's keyspace events (processes, which a kill -9 takes down with their metrics)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from cloud.stores import MemoryIdempotencyStore
from edge_agent import EdgeAgent, EdgeSettings, Reconciliation, Route
from tests.integration._services import redis_server, redis_url
from tests.integration.edge_agent._procs import (
    IDEM_PREFIX,
    CompletionWatch,
    Processes,
    agent_proc,
    serve_gateway,
    stop,
)
from tests.support.edge_bundle import images
from tests.support.gateway import BUNDLE, gateway_models, running_gateway
from tests.support.ports import free_port
from tests.support.proxy import TcpProxy

__all__ = ["redis_server", "redis_url"]  # fixtures


@pytest.mark.slow
def test_durability_kill9_agent_and_gateway_restart_exactly_once(
    redis_url: str, tmp_path: Path
) -> None:
    n = 1000
    models = gateway_models(tmp_path / "models")
    bundle = models / BUNDLE  # exits never confident (0.99): every request offloads
    (tmp_path / "secrets").mkdir()
    key = tmp_path / "secrets" / "replay.key"
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)  # a device secret others may read is refused
    replay, skip = tmp_path / "q" / "replay.db", tmp_path / "acked"
    client = redis.Redis.from_url(redis_url)
    client.delete(*[f"{IDEM_PREFIX}req-{i}" for i in range(n)])
    # A claim of the gateway killed below expires quickly, so its successor computes the key.
    gateway_env = {"AIML021_GATEWAY_IDEMPOTENCY__PENDING_TTL_S": "2"}
    port = free_port()
    acked: set[int] = set()

    def record(line: str) -> None:
        if line.startswith("ACK "):
            acked.add(int(line.split()[1]))

    with CompletionWatch(redis_url) as watch, Processes() as procs:
        # 1. Gateway down: the agent queues; kill -9 once half the requests are acknowledged.
        a = procs.add(agent_proc(bundle, port, replay, key, skip, n))
        assert a.stdout is not None
        routes = set()
        while len(acked) < n // 2:
            line = a.stdout.readline()
            assert line, "agent A exited early"
            record(line)
            routes.add(line.split()[2])
        stop(a, signal.SIGKILL)
        assert routes == {"deferred"}
        skip.write_text(" ".join(map(str, sorted(acked))))

        # 2. Gateway up; a new agent drains the queue and sends the rest; kill -9 both mid-way.
        gw = procs.add(serve_gateway(models, port, redis_url, tmp_path, "g1", **gateway_env)[0])
        b = procs.add(agent_proc(bundle, port, replay, key, skip, n))
        deadline = time.monotonic() + 60
        while len(watch.completed()) < 300 and time.monotonic() < deadline:
            time.sleep(0.02)
        rest = stop(b, signal.SIGKILL)
        stop(gw, signal.SIGKILL)
        for line in rest.splitlines():
            record(line)
        skip.write_text(" ".join(map(str, sorted(acked))))
        assert 300 <= len(watch.completed()) < n, "the kills landed mid-way"

        # 3. Restart both; the agent finishes.
        gw = procs.add(serve_gateway(models, port, redis_url, tmp_path, "g2", **gateway_env)[0])
        c = procs.add(agent_proc(bundle, port, replay, key, skip, n))
        out, _ = c.communicate(timeout=120)
        assert c.returncode == 0 and "DONE" in out, out[-2000:]
        stop(gw, signal.SIGTERM)
        counts = watch.settle()
    assert sorted(counts) == sorted(f"req-{i}" for i in range(n)), "every request delivered"
    assert set(counts.values()) == {1}, "each computed exactly once"
    done = [client.get(f"{IDEM_PREFIX}req-{i}") for i in range(n)]
    assert all(v is not None and b'"s": "done"' in v for v in done)  # type: ignore[operator]
    client.close()


async def test_gateway_restart_with_100_in_flight_completes_or_falls_back(
    gateway_models_dir: Path,
) -> None:
    bundle = gateway_models_dir / BUNDLE
    long_ms = 2500  # outlives the outage and reconnecting on a busy box
    store = MemoryIdempotencyStore()  # shared by both gateways, as replicas share Redis
    gateway: dict[str, Any] = {"idempotency": store, "session": {"max_inflight": 128}}
    async with TcpProxy() as proxy:
        async with running_gateway(gateway_models_dir, hold=True, **gateway) as gw:
            proxy.target = gw.port
            settings = EdgeSettings(
                bundle=bundle,
                gateway=proxy.address,
                tls={"insecure": True},
                session={"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
                cache={"entries": 0},
                routing={"sla_ms": long_ms},
            )
            # The gateway that takes over is up before the crash (behind the proxy's port).
            async with running_gateway(gateway_models_dir, **gateway) as gw2:
                async with EdgeAgent(settings) as agent:
                    assert await agent.wait_connected(5)
                    imgs = images(100, seed=3)
                    t0 = time.monotonic()
                    # Half of the requests get a deadline shorter than the outage.
                    tasks = [
                        asyncio.create_task(agent.infer(im, deadline_ms=300 if i % 2 else long_ms))
                        for i, im in enumerate(imgs)
                    ]
                    async with asyncio.timeout(10):
                        while len(gw.frames.headers) < 100:  # noqa: ASYNC110 - polls its frames
                            await asyncio.sleep(0.01)
                    proxy.target = None
                    proxy.drop()  # crash with everything in flight: connections reset
                    await asyncio.sleep(0.4)
                    proxy.target = gw2.port
                    # The crashed gateway is cut off; its shutdown (seconds on a busy box) is
                    # not part of the outage the device sees.
                    await gw.stop()
                    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
                    elapsed = time.monotonic() - t0
                computed = Counter(gw.computations()) + Counter(gw2.computations())
    assert len(results) == 100 and elapsed < 6
    for i, r in enumerate(results):
        assert r.route in (Route.CLOUD, Route.EDGE_FALLBACK)
        limit = 300 if i % 2 else long_ms
        assert r.timing.total_ms <= limit + 250, (i, r.timing.total_ms)  # + scheduling slack
        if i % 2:
            assert r.route is Route.EDGE_FALLBACK
    assert any(r.route is Route.CLOUD for r in results)  # long deadlines made it after restart
    assert set(computed.values()) <= {1}


async def test_tampered_and_corrupted_queue_detected_reported_and_agent_keeps_running(
    gateway_models_dir: Path, tmp_path: Path
) -> None:
    bundle = gateway_models_dir / BUNDLE
    key = os.urandom(32).hex()
    replay = tmp_path / "q" / "replay.db"
    port = free_port()
    base: dict[str, Any] = dict(
        bundle=bundle,
        gateway=f"127.0.0.1:{port}",
        tls={"insecure": True},
        replay={"path": replay, "key": key},
        session={"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        cache={"entries": 0},
    )
    async with EdgeAgent(EdgeSettings(**base)) as agent:
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
    async with running_gateway(gateway_models_dir, port) as gw:
        async with EdgeAgent(EdgeSettings(**base), on_reconcile=reports.append) as agent:
            for _ in range(300):
                if len(reports) >= 10:
                    break
                await asyncio.sleep(0.02)
            lost = sorted(r.idempotency_key for r in reports if r.status == "lost")
            delivered = sorted(r.idempotency_key for r in reports if r.status == "delivered")
            assert lost == ["k3", "k99"]
            assert delivered == sorted(f"k{i}" for i in range(10) if i not in (3, 7))
            assert gw.computations() == dict.fromkeys(delivered, 1)  # nothing lost reached it
            assert agent.metrics()["replay"]["lost"] == 2
            assert (await agent.infer(images(1, seed=9)[0])).route is Route.CLOUD  # still running
        # A file SQLite cannot read: moved aside, reported, a fresh queue starts.
        for p in replay.parent.iterdir():
            p.write_bytes(os.urandom(8192))
        reports.clear()
        async with EdgeAgent(EdgeSettings(**base), on_reconcile=reports.append) as agent:
            assert [r.status for r in reports] == ["lost"] and "unreadable" in reports[0].detail
            assert await agent.wait_connected(5)
            assert (await agent.infer(images(1, seed=10)[0])).route is Route.CLOUD
