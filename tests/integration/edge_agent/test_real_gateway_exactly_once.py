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

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis

from tests.integration._services import free_port, redis_server, redis_url
from tests.support.edge_bundle import make_bundle

__all__ = ["redis_server", "redis_url"]  # fixtures

ROOT = Path(__file__).resolve().parents[3]
N = 200


def _gateway(
    models: Path, port: int, redis_url: str, tmp: Path, name: str
) -> tuple[subprocess.Popen[str], int]:
    port_file = tmp / f"{name}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud", "serve", "--models", str(models), "--port", str(port),
         "--metrics-port", "0", "--port-file", str(port_file), "--insecure", "--stores", "redis",
         "--redis-url", redis_url, "--metadata-url", "none"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "AIML021_GATEWAY_DRAIN_GRACE_S": "2"},
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not port_file.exists():
        assert proc.poll() is None, "gateway exited"
        assert time.monotonic() < deadline, "gateway did not start"
        time.sleep(0.05)
    time.sleep(0.05)  # the file is written in one call; let it land
    return proc, int(json.loads(port_file.read_text())["metrics_port"])


def _agent(bundle: Path, port: int, tmp: Path, skip: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.edge_agent._agent_proc", "--bundle", str(bundle),
         "--gateway", f"127.0.0.1:{port}", "--replay", str(tmp / "q" / "replay.db"),
         "--key-file", str(tmp / "secrets" / "replay.key"), "--count", str(N), "--skip",
         str(skip)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def _metric(metrics_port: int, name: str, labels: str = "") -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _computed(metrics_port: int) -> float:
    return _metric(metrics_port, "aiml021_gateway_idempotency_total", 'outcome="computed"')


def _idle_count(metrics_port: int) -> float:
    """Computations once no session is open and the count stopped moving."""
    last = -1.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sessions = _metric(metrics_port, "aiml021_gateway_open_streams", 'kind="session"')
        now = _computed(metrics_port)
        if sessions == 0 and now == last:
            return now
        last = now
        time.sleep(0.2)
    raise AssertionError("gateway did not go idle")


def _stop(proc: subprocess.Popen[str], sig: int) -> None:
    proc.send_signal(sig)
    proc.wait(20)
    if proc.stdout is not None:
        proc.stdout.close()


def test_kill9_agent_mid_drain_and_gateway_restart_compute_each_key_once(
    redis_url: str, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    bundle = make_bundle(models / "edge_bundle", thresholds=(0.99, 0.99, 0.0))
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "replay.key").write_text(os.urandom(32).hex())
    skip = tmp_path / "acked"
    client = redis.Redis.from_url(redis_url)
    client.delete(*[f"aiml021:idem:req-{i}" for i in range(N)])
    port = free_port()

    # 1. Gateway down: every request is answered locally and queued.
    a = _agent(bundle, port, tmp_path, skip)
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
    g1, m1 = _gateway(models, port, redis_url, tmp_path, "g1")
    try:
        deadline = time.monotonic() + 30
        while _computed(m1) < N // 3:
            assert time.monotonic() < deadline, "agent A did not drain"
            assert a.poll() is None, "agent A finished before it could be killed"
            time.sleep(0.01)
        _stop(a, signal.SIGKILL)
        first = _idle_count(m1)
    finally:
        _stop(g1, signal.SIGTERM)
    assert N // 3 <= first < N, "the kill landed mid-drain"

    # 3./4. G2: a new process on the same port and Redis; agent B drains the rest.
    g2, m2 = _gateway(models, port, redis_url, tmp_path, "g2")
    try:
        b = _agent(bundle, port, tmp_path, skip)
        out, _ = b.communicate(timeout=60)
        assert b.returncode == 0 and "DONE" in out, out[-2000:]
        second = _idle_count(m2)
    finally:
        _stop(g2, signal.SIGTERM)

    assert first + second == N, (first, second)
    done: list[bytes | None] = [client.get(f"aiml021:idem:req-{i}") for i in range(N)]  # type: ignore[misc]
    assert all(v is not None and b'"s": "done"' in v for v in done), "every key completed"
    client.close()
