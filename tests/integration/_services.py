"""Real Redis and PostgreSQL servers for integration tests (started here, never mocked).

- Redis: ``redis-server`` on a free loopback port with ``--save ''`` (no disk), or the server
  named by ``REDIS_URL`` (tests then isolate themselves with unique key prefixes).
- PostgreSQL 15: ``initdb`` + ``pg_ctl`` from ``/usr/lib/postgresql/15/bin`` (override with
  ``AIML021_PG_BIN``) into a temporary directory, or the server named by ``DATABASE_URL`` (tests
  then create a database of their own on it). PostgreSQL refuses to run as root, so when the tests
  run as root the data directory is owned by, and the server runs as, the ``postgres`` system user
  (``runuser -u postgres``; the Debian postgresql packages create that user).

Import the fixtures into a test module: ``from tests.integration._services import redis_url``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ports import free_port, wait_for_port

PG_BIN = Path(os.environ.get("AIML021_PG_BIN", "/usr/lib/postgresql/15/bin"))


@dataclass
class RedisServer:
    """A Redis the tests can stop and start again (when they own it)."""

    url: str
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def owned(self) -> bool:
        return self.port != 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def run_redis(*, own: bool = False) -> Iterator[RedisServer]:
    """Yield a running Redis (``REDIS_URL`` or a fresh ``redis-server``; with ``own`` always a
    fresh one, which the test may stop and start)."""
    if not own and (url := os.environ.get("REDIS_URL")):
        yield RedisServer(url=url)
        return
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server, or set REDIS_URL")
    port = free_port()
    server = RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _as_postgres_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", "postgres", "--", *cmd]


@dataclass
class PostgresServer:
    """A PostgreSQL the tests can stop and start (when they own it); ``url(db)`` names a database."""

    base_url: str
    datadir: Path | None = None
    port: int = 0

    @property
    def owned(self) -> bool:
        return self.datadir is not None

    def url(self, dbname: str = "postgres") -> str:
        return self.base_url.rsplit("/", 1)[0] + "/" + dbname

    def pg_ctl(self, *args: str) -> None:
        assert self.datadir is not None
        subprocess.run(
            _as_postgres_user([str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), *args]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.datadir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.pg_ctl("-o", opts, "-l", str(self.datadir / "server.log"), "-w", "-t", "60", "start")

    def stop(self) -> None:
        self.pg_ctl("-m", "immediate", "-w", "stop")

    def create_database(self) -> str:
        """Create an empty database for one test and return its URL."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
        return self.url(name)


@contextlib.contextmanager
def run_postgres() -> Iterator[PostgresServer]:
    """Yield a running PostgreSQL (``DATABASE_URL`` or a fresh initdb cluster)."""
    if url := os.environ.get("DATABASE_URL"):
        yield PostgresServer(base_url=url)
        return
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"{PG_BIN}/initdb not found: install postgresql-15, or set DATABASE_URL")
    tmp = Path(tempfile.mkdtemp(prefix="aiml021-pg-"))
    datadir = tmp / "data"
    datadir.mkdir()
    if os.geteuid() == 0:
        pg = pwd.getpwnam("postgres")
        for p in (tmp, datadir):
            os.chown(p, pg.pw_uid, pg.pw_gid)
    subprocess.run(
        _as_postgres_user(
            [str(PG_BIN / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "postgres"]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port = free_port()
    server = PostgresServer(
        base_url=f"postgresql://postgres@127.0.0.1:{port}/postgres", datadir=datadir, port=port
    )
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real Redis for this test module."""
    with run_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of a running real Redis."""
    if redis_server.owned and redis_server.proc is None:
        redis_server.start()
    return redis_server.url


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL 15 for this test module."""
    with run_postgres() as server:
        yield server


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> str:
    """URL of a fresh, empty database on a real PostgreSQL."""
    return postgres_server.create_database()
