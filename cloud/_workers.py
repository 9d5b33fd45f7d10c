"""``aiml021 serve --workers N``: one gateway process per core on one host.

A Python gateway is one event loop on one core; a host with N cores runs N of them. The
supervisor here starts ``server.workers`` worker processes (``python -m cloud._workers``), each a
complete :class:`cloud.app.Gateway` built from the same settings, and each binding the same gRPC
(and REST) port with SO_REUSEPORT: the kernel hashes every new connection to one of the
listening workers, so device sessions (one long-lived stream per connection) spread over the
cores. What must be one across workers lives outside them: idempotency keys and cached results in
Redis, request metadata in PostgreSQL (both required, see :class:`cloud._settings.GatewaySettings`),
rollouts in Redis (:mod:`cloud._workers_rollouts`). A device's session lives in one worker; when
that worker dies the device reconnects (to another worker, or to the restarted one) and replays
with the same idempotency keys.

The supervisor
- reserves the ports first (a bound, never listening SO_REUSEPORT socket: port 0 becomes one
  concrete port all workers share, and no other program can take it between worker restarts);
- gives each worker its own metrics port (``metrics.port + i``, or a free one when 0): counters
  are per process, Prometheus scrapes each;
- writes ``server.port_file`` once every worker serves: ``port``, ``rest_port``,
  ``metrics_ports`` and the workers' ``pids`` (rewritten when a worker is replaced);
- restarts a worker that dies (with a growing pause when it keeps dying at once), and on
  SIGTERM/SIGINT passes the signal on so that every worker drains its sessions, then exits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud._settings import GatewaySettings
from common.errors import InvalidArgument, Unavailable

log = logging.getLogger(__name__)

START_TIMEOUT_S = 120.0
"""How long the first start of every worker may take (model loading) before giving up."""
MAX_RESTART_PAUSE_S = 10.0
"""Longest pause before restarting a worker that keeps dying right after its start."""
STABLE_AFTER_S = 30.0
"""A worker that lived this long restarts at once when it dies (the pause starts over)."""


def reserve_port(host: str, port: int) -> socket.socket:
    """A bound, not listening SO_REUSEPORT socket on ``host:port`` (0: a free port). It receives
    no connections; it keeps the port for the workers, which bind it with SO_REUSEPORT too."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass
class _Worker:
    index: int
    config: Path
    port_file: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0
    restart_at: float | None = None
    ports: dict[str, Any] = field(default_factory=dict)


class Supervisor:
    """Starts, watches and stops the worker processes of one ``serve --workers N``."""

    def __init__(self, settings: GatewaySettings, run_dir: Path) -> None:
        self.settings = settings
        self.run_dir = run_dir
        # Workers get the settings as JSON in a 0700 directory; a field that does not survive
        # that (a masked secret type, say) would start them misconfigured: refuse instead.
        if GatewaySettings.model_validate(settings.model_dump(mode="json")) != settings:
            raise InvalidArgument(
                "the gateway settings do not survive JSON; cannot hand them to workers"
            )
        s = settings.server
        self._reserved = [reserve_port(s.host, s.port)]
        self.port = self._reserved[0].getsockname()[1]
        self.rest_port: int | None = None
        if settings.rest.port is not None:
            self._reserved.append(reserve_port(s.host, settings.rest.port))
            self.rest_port = self._reserved[-1].getsockname()[1]
        self.workers = [self._prepare(i) for i in range(s.workers)]
        self._stopping = False

    def _prepare(self, index: int) -> _Worker:
        data = self.settings.model_dump(mode="json")
        port_file = self.run_dir / f"worker-{index}.json"
        data["server"].update(workers=1, reuse_port=True, port=self.port, port_file=str(port_file))
        if self.rest_port is not None:
            data["rest"]["port"] = self.rest_port
        metrics = self.settings.metrics.port
        if metrics:  # a fixed port: one per worker from there; 0 and None stay as they are
            data["metrics"]["port"] = metrics + index
        config = self.run_dir / f"worker-{index}.settings.json"
        config.write_text(json.dumps(data))
        return _Worker(index, config, port_file)

    def _spawn(self, w: _Worker) -> None:
        w.port_file.unlink(missing_ok=True)
        w.ports = {}
        cmd = [sys.executable, "-m", "cloud._workers", str(w.config), str(w.index)]
        w.proc = subprocess.Popen(cmd)
        w.started_at = time.monotonic()
        w.restart_at = None
        log.info("worker %d started (pid %d)", w.index, w.proc.pid)

    def start(self) -> None:
        """Start every worker; returns once all serve (raises Unavailable if one cannot)."""
        for w in self.workers:
            self._spawn(w)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(self._read_ports(w) for w in self.workers):
            for w in self.workers:
                assert w.proc is not None
                if w.proc.poll() is not None:
                    self.stop()
                    raise Unavailable(
                        f"gateway worker {w.index} exited with {w.proc.returncode} while "
                        "starting (its log is above)"
                    )
            if time.monotonic() > deadline:
                self.stop()
                raise Unavailable(f"gateway workers did not start in {START_TIMEOUT_S:g} s")
            time.sleep(0.05)
        self._write_port_file()
        log.info(
            "%d gateway workers serving on %s:%d (pids %s)",
            len(self.workers), self.settings.server.host, self.port,
            ", ".join(str(w.proc.pid) for w in self.workers if w.proc),
        )  # fmt: skip

    def _read_ports(self, w: _Worker) -> bool:
        if not w.ports:
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
                w.ports = json.loads(w.port_file.read_text())
        return bool(w.ports)

    def _write_port_file(self) -> None:
        path = self.settings.server.port_file
        if path is None:
            return
        info = {
            "port": self.port,
            "rest_port": self.rest_port,
            "metrics_port": self.workers[0].ports.get("metrics_port"),
            "metrics_ports": [w.ports.get("metrics_port") for w in self.workers],
            "pids": [w.proc.pid if w.proc else None for w in self.workers],
        }
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(path)  # readers never see half a file

    def watch_once(self) -> None:
        """Restart workers that died (after their pause); refresh the port file."""
        now = time.monotonic()
        changed = False
        for w in self.workers:
            assert w.proc is not None
            if w.restart_at is None and w.proc.poll() is not None:
                lived = now - w.started_at
                w.failures = 0 if lived >= STABLE_AFTER_S else w.failures + 1
                pause = min(MAX_RESTART_PAUSE_S, 0.25 * (2**w.failures)) if w.failures else 0.0
                log.error(
                    "worker %d (pid %d) died with %s after %.1f s; restarting in %.2f s",
                    w.index, w.proc.pid, w.proc.returncode, lived, pause,
                )  # fmt: skip
                w.restart_at = now + pause
            if w.restart_at is not None and now >= w.restart_at:
                self._spawn(w)
            if w.restart_at is None and not w.ports and self._read_ports(w):
                changed = True
        if changed and all(w.ports for w in self.workers):
            self._write_port_file()

    def stop(self) -> None:
        """SIGTERM every worker (each drains its sessions), SIGKILL the ones still running
        after ``drain_grace_s`` + 15 s, release the ports."""
        self._stopping = True
        live = [w.proc for w in self.workers if w.proc is not None and w.proc.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.drain_grace_s + 15.0
        for p in live:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker pid %d did not drain in time: killed", p.pid)
                p.kill()
                p.wait()
        for sock in self._reserved:
            sock.close()

    def run(self) -> int:
        """Start, then watch until SIGTERM/SIGINT; stop. The exit code of ``serve``."""
        stop = False

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stop
            stop = True

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not stop:
                self.watch_once()
                time.sleep(0.1)
            log.info("signal received: draining %d workers", len(self.workers))
        finally:
            if not self._stopping:
                self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0


def serve_workers(settings: GatewaySettings) -> int:
    """Run ``settings.server.workers`` gateway processes until SIGTERM (``serve --workers``)."""
    with tempfile.TemporaryDirectory(prefix="aiml021-workers-") as run_dir:
        return Supervisor(settings, Path(run_dir)).run()


def _worker_main(config: Path, index: int) -> int:
    import asyncio

    from cloud.app import Gateway

    if os.environ.get("AIML021_LOG_FORMAT", "") == "json":  # the supervisor's --log-format
        from common.telemetry import configure_logging

        configure_logging("json")
    else:
        logging.basicConfig(
            level=logging.INFO,
            format=f"%(asctime)s %(levelname)s worker-{index} %(name)s: %(message)s",
        )
    settings = GatewaySettings.model_validate(json.loads(config.read_text()))
    asyncio.run(Gateway.from_settings(settings).serve_forever())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(_worker_main(Path(sys.argv[1]), int(sys.argv[2])))


__all__ = ["Supervisor", "reserve_port", "serve_workers"]
