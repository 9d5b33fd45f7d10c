"""The issuing CA as its own process for tests: ``aiml021 ca --dir DIR serve`` on a free
loopback port (the way it runs in production: apart from the gateway), plus the ``aiml021 ca``
commands an operator would type."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def ca_command(ca_dir: Path, *args: str) -> str:
    """Run ``aiml021 ca --dir CA_DIR ARGS...``; its standard output (raises on failure)."""
    done = subprocess.run(
        [sys.executable, "-m", "common.cli", "ca", "--dir", str(ca_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"aiml021 ca {' '.join(args)} failed: {done.stderr}")
    return done.stdout


@contextmanager
def ca_service(
    ca_dir: Path,
    *,
    revocation_url: str = "",
    device_lifetime: str = "24h",
    audit_url: str = "",
    port: int = 0,
) -> Iterator[int]:
    """``aiml021 ca serve`` in a child process; yields its port (stopped with SIGTERM, which
    it handles gracefully: its audit trail is flushed)."""
    port_file = ca_dir.parent / f"{ca_dir.name}.port"
    port_file.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "common.cli",
        "ca",
        "--dir",
        str(ca_dir),
        *(["--audit-url", audit_url] if audit_url else []),
        "serve",
        "--port",
        str(port),
        "--port-file",
        str(port_file),
        "--device-lifetime",
        device_lifetime,
    ]
    if revocation_url:
        cmd += ["--revocation-url", revocation_url]
    log = (ca_dir.parent / f"{ca_dir.name}.log").open("wb")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"CA service did not start: {(ca_dir.parent / f'{ca_dir.name}.log').read_text()}"
                )
            time.sleep(0.05)
        yield int(port_file.read_text())
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


__all__ = ["ca_command", "ca_service"]
