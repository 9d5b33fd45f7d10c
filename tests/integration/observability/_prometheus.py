"""A real Prometheus server (Debian's ``prometheus`` binary) and a real ``aiml021 serve`` process
for observability tests, both on free loopback ports."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.ports import free_port, wait_for_port


@dataclass
class Prometheus:
    """A running Prometheus and its HTTP API."""

    port: int
    log: Path

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``'s ``data`` (fails on an error status)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]


def fast_rules(src: Path, dst: Path, for_s: int = 2) -> Path:
    """``src`` with every alert's ``for`` shortened to ``for_s`` seconds (the expressions and
    windows stay as shipped; promtool's unit tests cover the shipped durations)."""
    spec = yaml.safe_load(src.read_text())
    for group in spec["groups"]:
        for rule in group["rules"]:
            if "alert" in rule and "for" in rule:
                rule["for"] = f"{for_s}s"
    dst.write_text(yaml.safe_dump(spec, sort_keys=False))
    return dst


@contextlib.contextmanager
def run_prometheus(
    workdir: Path,
    targets: list[str],
    rule_files: list[Path],
    interval: str = "1s",
    edge_targets: list[str] | None = None,
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` (job ``aiml021-gateway``) and ``edge_targets`` (edge
    agents' endpoints, job ``aiml021-edge``) and evaluating ``rule_files`` every ``interval``,
    storing into ``workdir``."""
    exe = shutil.which("prometheus")
    if exe is None:
        raise RuntimeError("prometheus not found: apt-get install prometheus (make system-deps)")
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": "aiml021-gateway", "static_configs": [{"targets": targets}]}
        ],
    }
    if edge_targets:
        config["scrape_configs"].append(
            {"job_name": "aiml021-edge", "static_configs": [{"targets": edge_targets}]}
        )
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = workdir / "prometheus.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, timeout_s=30)
        prom = Prometheus(port, log)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2):
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield prom
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class ServeProcess:
    """A running ``aiml021 serve`` child process."""

    port: int
    metrics_port: int
    log: Path


@contextlib.contextmanager
def run_serve(models: Path, workdir: Path) -> Iterator[ServeProcess]:
    """``python -m cloud serve`` over ``models`` (plaintext, ports picked by the gateway, no
    metadata database), stopped with SIGTERM."""
    port_file = workdir / "ports.json"
    cmd = [sys.executable, "-m", "cloud", "serve", "--models", str(models), "--insecure",
           "--port", "0", "--metrics-port", "0", "--port-file", str(port_file),
           "--metadata-url", "none"]  # fmt: skip
    log = workdir / "gateway.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ports: dict[str, Any] = {}
        while not ports:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            with contextlib.suppress(OSError, ValueError):  # not there, or half written
                ports = json.loads(port_file.read_text())
            time.sleep(0.05)
        yield ServeProcess(ports["port"], ports["metrics_port"], log)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


__all__ = ["Prometheus", "ServeProcess", "fast_rules", "run_prometheus", "run_serve"]
