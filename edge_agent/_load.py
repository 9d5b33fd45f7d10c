"""How busy the device is: this process's CPU use over a sliding window, as a share of the cores
it may use (CPU affinity, capped by a cgroup CPU quota when one applies). Fed to the policy as
``edge_load`` so it can prefer offloading when local compute would queue."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def usable_cores(
    proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = Path("/sys/fs/cgroup")
) -> float:
    """Cores this process may use: its CPU affinity, capped by a cgroup v1 or v2 CPU quota."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cores = float(os.cpu_count() or 1)
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return cores
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if "cpu" in controllers.split(","):  # cgroup v1
            d = cgroup_root / "cpu" / rel
            try:
                quota = int((d / "cpu.cfs_quota_us").read_text())
                period = int((d / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            if quota > 0 and period > 0:
                cores = min(cores, quota / period)
        elif controllers == "":  # cgroup v2: "0::/path"
            try:
                quota_s, period_s = (cgroup_root / rel / "cpu.max").read_text().split()
            except (OSError, ValueError):
                continue
            if quota_s != "max" and int(period_s) > 0:
                cores = min(cores, int(quota_s) / int(period_s))
    return max(cores, 0.01)


class EdgeLoad:
    """CPU load in [0, 1], refreshed at most every ``interval_s`` (cheap to call per request)."""

    def __init__(
        self,
        cores: float | None = None,
        interval_s: float = 0.5,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cores = cores if cores is not None else usable_cores()
        self.interval_s = interval_s
        self._cpu = cpu_clock
        self._wall = wall_clock
        self._last_cpu = cpu_clock()
        self._last_wall = wall_clock()
        self._value = 0.0

    def value(self) -> float:
        """The load measured over the last completed window."""
        now = self._wall()
        elapsed = now - self._last_wall
        if elapsed >= self.interval_s:
            cpu = self._cpu()
            self._value = min(1.0, max(0.0, (cpu - self._last_cpu) / (elapsed * self.cores)))
            self._last_cpu, self._last_wall = cpu, now
        return self._value


__all__ = ["EdgeLoad", "usable_cores"]
