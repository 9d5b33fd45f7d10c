"""Two test hosts on one machine: an edge and a cloud network namespace joined by a veth pair,
bandwidth shaped with tbf on both ends, and a cgroup-v1 CPU quota that holds the edge process to
a fraction of a core. Needs root; everything it creates is removed by ``Topology.close()``.

The addresses are the project's own test hosts inside namespaces this process creates; no traffic
leaves the machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


@dataclass
class Topology:
    """edge ns (EDGE_ADDR) <-veth-> cloud ns (CLOUD_ADDR)."""

    name: str = "aiml021"
    edge_addr: str = "10.213.0.2"
    cloud_addr: str = "10.213.0.1"
    prefix: int = 30
    created: bool = False

    @property
    def edge_ns(self) -> str:
        return f"{self.name}-edge"

    @property
    def cloud_ns(self) -> str:
        return f"{self.name}-cloud"

    def create(self) -> Topology:
        self.close()  # leftovers of an interrupted run
        _run("ip", "netns", "add", self.edge_ns)
        _run("ip", "netns", "add", self.cloud_ns)
        self.created = True
        e, c = f"{self.name[:8]}-e", f"{self.name[:8]}-c"
        _run("ip", "link", "add", e, "type", "veth", "peer", "name", c)
        _run("ip", "link", "set", e, "netns", self.edge_ns)
        _run("ip", "link", "set", c, "netns", self.cloud_ns)
        for ns, dev, addr in (
            (self.edge_ns, e, self.edge_addr),
            (self.cloud_ns, c, self.cloud_addr),
        ):
            _run("ip", "-n", ns, "addr", "add", f"{addr}/{self.prefix}", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
        self._devs = {self.edge_ns: e, self.cloud_ns: c}
        return self

    def shape(self, bandwidth_mbit: float) -> None:
        """Limits each direction of the link to ``bandwidth_mbit`` with tbf (replaces any)."""
        for ns, dev in self._devs.items():
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root"],
                capture_output=True,
            )
            burst = max(int(bandwidth_mbit * 1e6 / 8 / 250), 16 * 1024)  # ~4 ms of data, >= 16 KiB
            _run(
                "ip",
                "netns",
                "exec",
                ns,
                "tc",
                "qdisc",
                "add",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                f"{bandwidth_mbit}mbit",
                "burst",
                str(burst),
                "latency",
                "400ms",
            )

    def close(self) -> None:
        for ns in (self.edge_ns, self.cloud_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created = False

    def __enter__(self) -> Topology:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def exec_prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]


@dataclass
class CpuQuota:
    """A cgroup-v1 CPU group capped at ``cores`` cores (e.g. 0.5)."""

    name: str
    cores: float
    period_us: int = 100_000

    @property
    def path(self) -> Path:
        return CGROUP_CPU / self.name

    def create(self) -> CpuQuota:
        self.path.mkdir(exist_ok=True)
        (self.path / "cpu.cfs_period_us").write_text(str(self.period_us))
        (self.path / "cpu.cfs_quota_us").write_text(str(int(self.cores * self.period_us)))
        return self

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def preexec(self) -> None:
        """For subprocess.Popen(preexec_fn=...): joins the group before exec."""
        self.add(os.getpid())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            for pid in (self.path / "cgroup.procs").read_text().split():
                (CGROUP_CPU / "cgroup.procs").write_text(pid)
            self.path.rmdir()

    def __enter__(self) -> CpuQuota:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.close()
