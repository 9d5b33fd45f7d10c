"""Exactly-once against the REAL gateway: ``aiml021 serve`` processes sharing one real Redis
idempotency store, and edge agent processes with an encrypted offline queue.

1. The gateway is down: agent A answers 200 requests locally and queues them (deferred).
2. Gateway G1 starts; A drains its queue; A is killed -9 mid-drain.
3. G1 stops (SIGTERM); G2 starts (a new process, same port, same Redis).
4. Agent B (same queue file) drains what is left.

Gateway-side computations per key come from each gateway's metrics
(``aiml021_gateway_idempotency_total{outcome="computed"}``, scraped when it is idle) and the
Redis store (a completed entry per key): 200 keys, each computed exactly once, none lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis

from tests.integration._services import redis_server, redis_url
from tests.integration.edge_agent._procs import (
    IDEM_PREFIX,
    Processes,
    agent_proc,
    computed,
    idle_count,
    serve_gateway,
    stop,
)
from tests.support.edge_bundle import make_bundle
from tests.support.ports import free_port

__all__ = ["redis_server", "redis_url"]  # fixtures

N = 200


def _agent(bundle: Path, port: int, tmp: Path, skip: Path) -> subprocess.Popen[str]:
    return agent_proc(
        bundle, port, tmp / "q" / "replay.db", tmp / "secrets" / "replay.key", skip, N
    )


def test_kill9_agent_mid_drain_and_gateway_restart_compute_each_key_once(
    redis_url: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    bundle = make_bundle(models / "edge_bundle", thresholds=(0.99, 0.99, 0.0))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "replay.key").write_text(os.urandom(32).hex())
    (tmp_path / "secrets" / "replay.key").chmod(0o600)  # a readable device secret is refused
    skip = tmp_path / "acked"
    client = redis.Redis.from_url(redis_url)
    client.delete(*[f"{IDEM_PREFIX}req-{i}" for i in range(N)])
    port = free_port()

    with Processes() as procs:
        # 1. Gateway down: every request is answered locally and queued.
        a = procs.add(_agent(bundle, port, tmp_path, skip))
        assert a.stdout is not None
        acked = 0
        while acked < N:
            line = a.stdout.readline()
            assert line, "agent A exited early"
            if line.startswith("ACK "):
                assert line.split()[2] == "deferred", line
                acked += 1
        skip.write_text(" ".join(str(i) for i in range(N)))

        # 2. G1 starts; A drains; kill -9 A part-way.
        g1, m1 = serve_gateway(models, port, redis_url, tmp_path, "g1")
        procs.add(g1)
        deadline = time.monotonic() + 30
        while computed(m1) < N // 3:
            assert time.monotonic() < deadline, "agent A did not drain"
            assert a.poll() is None, "agent A finished before it could be killed"
            time.sleep(0.01)
        stop(a, signal.SIGKILL)
        first = idle_count(m1)
        stop(g1, signal.SIGTERM)
        assert N // 3 <= first < N, "the kill landed mid-drain"

        # 3./4. G2: a new process on the same port and Redis; agent B drains the rest.
        g2, m2 = serve_gateway(models, port, redis_url, tmp_path, "g2")
        procs.add(g2)
        b = procs.add(_agent(bundle, port, tmp_path, skip))
        out, _ = b.communicate(timeout=60)
        assert b.returncode == 0 and "DONE" in out, out[-2000:]
        second = idle_count(m2)
        stop(g2, signal.SIGTERM)

    assert first + second == N, (first, second)
    done: list[bytes | None] = [client.get(f"{IDEM_PREFIX}req-{i}") for i in range(N)]  # type: ignore[misc]
    assert all(v is not None and b'"s": "done"' in v for v in done), "every key completed"
    client.close()
