"""A real nginx (Debian's, with the stream module) in front of gateway replicas, for tests.

:func:`run_balancer` fills ``deploy/nginx/aiml021.conf.template`` — the configuration users run —
with a free loopback port and the replicas' ports, starts ``nginx -g 'daemon off;'`` in a
temporary prefix and stops it (SIGQUIT, then SIGKILL) at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "aiml021.conf.template"
STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")


def render(prefix: Path, listen: str, upstreams: Sequence[str], workers: str = "1") -> str:
    """The template with its placeholders filled."""
    lines = "\n".join(f"        server {u} max_fails=1 fail_timeout=10s;" for u in upstreams)
    user = "user nobody nogroup;" if os.geteuid() == 0 else ""
    text = TEMPLATE.read_text()
    for name, value in {
        "PREFIX": str(prefix),
        "LISTEN": listen,
        "UPSTREAMS": lines,
        "WORKERS": workers,
        "USER": user,
    }.items():
        text = text.replace(f"@@{name}@@", value)
    return text


@dataclass
class Balancer:
    """A running nginx; ``address`` is what devices dial."""

    port: int
    prefix: Path
    proc: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        """One line per finished proxied connection: ``client -> replica status ...``."""
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []


@contextlib.contextmanager
def run_balancer(upstream_ports: Sequence[int], workers: str = "1") -> Iterator[Balancer]:
    """nginx on a free loopback port balancing over ``127.0.0.1:<port>`` of each replica."""
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx).exists() or not STREAM_MODULE.exists():
        raise RuntimeError(
            "nginx with the stream module not found: apt-get install nginx-light "
            "libnginx-mod-stream (make system-deps)"
        )
    prefix = Path(tempfile.mkdtemp(prefix="aiml021-nginx-"))
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        render(prefix, f"127.0.0.1:{port}", [f"127.0.0.1:{p}" for p in upstream_ports], workers)
    )
    os.chmod(prefix, 0o755)
    check = subprocess.run([nginx, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t refused the configuration: {check.stderr.decode()}")
    proc = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield Balancer(port, prefix, proc)
    finally:
        proc.send_signal(signal.SIGTERM)  # fast shutdown: open device connections are cut
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(prefix, ignore_errors=True)


__all__ = ["TEMPLATE", "Balancer", "render", "run_balancer"]
