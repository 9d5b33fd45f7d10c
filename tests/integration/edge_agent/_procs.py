"""Real processes for the edge acceptance tests: ``aiml021 serve`` gateways sharing one Redis,
edge agent processes (``_agent_proc``), and a watch on the Redis idempotency store that counts
completed computations per key however the gateways end (kill -9 included)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

from cloud.core import Principal, Role, idempotency_key

ROOT = Path(__file__).resolve().parents[3]
_PLAINTEXT_CALLER = Principal("insecure", Role.ADMIN, "default", authenticated_by="insecure")
"""Who every caller of a plaintext (``--insecure``) gateway is (``cloud.authz.Authenticator``)."""
IDEM_PREFIX = "aiml021:idem:" + idempotency_key(_PLAINTEXT_CALLER, "k").removesuffix("k")
"""Key prefix of the gateway's Redis idempotency store for the keys of a plaintext gateway's
callers (a key is scoped to its caller: ``cloud.core.idempotency_key``)."""


def serve_gateway(
    models: Path, port: int, redis_url: str, tmp: Path, name: str, **env: str
) -> tuple[subprocess.Popen[str], int]:
    """Start ``python -m cloud serve`` (plaintext, Redis stores) on ``port``; return the process
    and its metrics port once it serves. ``env`` adds environment variables."""
    port_file = tmp / f"{name}.json"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud", "serve", "--models", str(models), "--port", str(port),
         "--metrics-port", "0", "--port-file", str(port_file), "--insecure", "--stores", "redis",
         "--redis-url", redis_url, "--metadata-url", "none"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "AIML021_GATEWAY_DRAIN_GRACE_S": "2", **env},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    try:
        while not port_file.exists():
            assert proc.poll() is None, f"gateway exited with {proc.returncode}"
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait(20)
        raise
    time.sleep(0.05)  # the file is written in one call; let it land
    return proc, int(json.loads(port_file.read_text())["metrics_port"])


def agent_proc(
    bundle: Path, port: int, replay: Path, key_file: Path, skip: Path, count: int
) -> subprocess.Popen[str]:
    """An edge agent process (see ``_agent_proc``) printing ``ACK <i> <route>`` lines."""
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.edge_agent._agent_proc", "--bundle", str(bundle),
         "--gateway", f"127.0.0.1:{port}", "--replay", str(replay), "--key-file", str(key_file),
         "--count", str(count), "--skip", str(skip)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip


def stop(proc: subprocess.Popen[str], sig: int) -> str:
    """Send ``sig``, wait for the exit, return what was left on its stdout and close it."""
    proc.send_signal(sig)
    proc.wait(20)
    if proc.stdout is None:
        return ""
    try:
        return proc.stdout.read()
    finally:
        proc.stdout.close()


class Processes:
    """Child processes a test started; whatever still runs when the test ends is killed, so a
    failing test leaves no gateway or agent behind."""

    def __init__(self) -> None:
        self._procs: list[subprocess.Popen[str]] = []

    def add(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        self._procs.append(proc)
        return proc

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(20)
            if proc.stdout is not None and not proc.stdout.closed:
                proc.stdout.close()


def metric(metrics_port: int, name: str, labels: str = "") -> float:
    """One sample of the gateway's Prometheus metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    pattern = rf"^{re.escape(name)}{re.escape('{' + labels + '}') if labels else ''} (\S+)$"
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def computed(metrics_port: int) -> float:
    """Keys the gateway computed (its idempotency metric)."""
    return metric(metrics_port, "aiml021_gateway_idempotency_total", 'outcome="computed"')


def idle_count(metrics_port: int) -> float:
    """Computations once no session is open and the count stopped moving."""
    last = -1.0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        sessions = metric(metrics_port, "aiml021_gateway_open_streams", 'kind="session"')
        now = computed(metrics_port)
        if sessions == 0 and now == last:
            return now
        last = now
        time.sleep(0.2)
    raise AssertionError("gateway did not go idle")


class CompletionWatch:
    """Completed computations per idempotency key, read from Redis keyspace events.

    The store claims a key with ``SET NX`` (the key was absent), completes it with ``SET`` over
    the claim, and drops a failed claim with ``DEL`` (or Redis expires a dead replica's claim).
    A ``set`` on a claimed key is therefore one finished computation, whichever gateway process
    made it and however that process ended.
    """

    def __init__(self, url: str, prefix: str = IDEM_PREFIX) -> None:
        self._client = redis.Redis.from_url(url)
        self._client.config_set("notify-keyspace-events", "K$gx")
        db = int(self._client.connection_pool.connection_kwargs.get("db", 0))
        self._channel = f"__keyspace@{db}__:"
        self._prefix = prefix
        self._lock = threading.Lock()
        self._state: dict[str, str] = {}
        self._done: dict[str, int] = {}
        self._last_event = time.monotonic()
        self._pubsub = self._client.pubsub()
        self._pubsub.psubscribe(**{f"{self._channel}{prefix}*": self._on_event})
        self._thread = self._pubsub.run_in_thread(sleep_time=0.01, daemon=True)

    def _on_event(self, message: dict[str, Any]) -> None:
        key = message["channel"].decode().removeprefix(self._channel + self._prefix)
        event = message["data"].decode()
        with self._lock:
            self._last_event = time.monotonic()
            if event == "set":
                if self._state.get(key) == "claimed":
                    self._done[key] = self._done.get(key, 0) + 1
                    self._state[key] = "done"
                else:
                    self._state[key] = "claimed"
            elif event in ("del", "expired"):
                self._state.pop(key, None)

    def completed(self) -> dict[str, int]:
        """Computations completed so far, per key."""
        with self._lock:
            return dict(self._done)

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 10.0) -> dict[str, int]:
        """:meth:`completed` once no event arrived for ``quiet_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if time.monotonic() - self._last_event >= quiet_s:
                    return dict(self._done)
            time.sleep(0.05)
        raise AssertionError("the idempotency store did not go quiet")

    def close(self) -> None:
        self._thread.stop()
        self._thread.join(5)
        self._pubsub.close()
        self._client.close()

    def __enter__(self) -> CompletionWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "IDEM_PREFIX",
    "ROOT",
    "CompletionWatch",
    "Processes",
    "agent_proc",
    "computed",
    "idle_count",
    "metric",
    "serve_gateway",
    "stop",
]
