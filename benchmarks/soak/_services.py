"""The processes a soak run starts, kills and restarts: Redis, PostgreSQL and the gateway."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("AIML021_PG_BIN", "/usr/lib/postgresql/15/bin"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Redis:
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def kill(self) -> None:
        """kill -9: every key is lost (no persistence), as after a crash without AOF."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass
class Postgres:
    datadir: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self.datadir.mkdir(parents=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam("postgres")
            for p in (self.datadir.parent, self.datadir):
                os.chown(p, pg.pw_uid, pg.pw_gid)
        subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(self.datadir), "-A",
                                     "trust", "-U", "postgres"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def _ctl(self, *args: str) -> None:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), *args]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", opts, "-l", str(self.datadir / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        """Immediate shutdown (no checkpoint), as a crash would."""
        self._ctl("-m", "immediate", "-w", "stop")


@dataclass
class Gateway:
    """``aiml021 serve`` on a fixed port, so that devices reconnect to the same address."""

    workdir: Path
    pki: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    incarnation: int = 0
    launcher: tuple[str, ...] = ("-m", "cloud")
    """What runs ``serve``: ``python -m cloud``, or a wrapper (``benchmarks.soak.traced``)."""

    def start(self) -> None:
        self.incarnation += 1
        port_file = self.workdir / f"ports-{self.incarnation}.json"
        log = (self.workdir / f"gateway-{self.incarnation}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *self.launcher, "serve", "--models", str(ROOT / "models"), "--port",
             str(self.port), "--metrics-port", "0", "--port-file", str(port_file), "--tls-dir",
             str(self.pki)], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, **self.env},
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + 60
        while True:
            try:
                json.loads(port_file.read_text())
                return
            except (FileNotFoundError, ValueError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"gateway did not start; see {log.name}") from None
                time.sleep(0.05)

    def kill(self) -> None:
        """kill -9 mid-flight."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        """SIGTERM: drain, flush metadata, exit."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid) if self.proc is not None else 0.0


def services(base_port: int | None, pg_prefix: str) -> tuple[Redis, Postgres, int]:
    """This run's own Redis and PostgreSQL (never the machine's shared ones: the soak kills and
    stops them) and the gateway's port: ``base_port``, +1 for PostgreSQL, +2 for Redis, or free
    ports. PostgreSQL's data directory is a temporary directory of its own: the postgres user
    cannot enter the run's (mode 0700, root's)."""
    datadir = Path(tempfile.mkdtemp(prefix=pg_prefix)) / "data"
    if base_port is None:
        return Redis(), Postgres(datadir), free_port()
    return Redis(port=base_port + 2), Postgres(datadir, port=base_port + 1), base_port


def loadavg() -> list[float]:
    """The machine's 1, 5 and 15-minute load averages (other work on a shared box)."""
    return [round(x, 1) for x in os.getloadavg()]
