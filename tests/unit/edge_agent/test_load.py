"""Edge load: CPU share over a window, capped by the cgroup quota the process runs under."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent._load import EdgeLoad, usable_cores


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_load_is_cpu_time_over_wall_time_and_cores() -> None:
    cpu, wall = Clock(), Clock()
    load = EdgeLoad(cores=2.0, interval_s=0.5, cpu_clock=cpu, wall_clock=wall)
    assert load.value() == 0.0
    cpu.t, wall.t = 0.5, 1.0  # half a core-second in one second on two cores
    assert load.value() == pytest.approx(0.25)
    cpu.t, wall.t = 0.6, 1.2  # window not complete yet: previous value kept
    assert load.value() == pytest.approx(0.25)
    cpu.t, wall.t = 4.0, 2.0  # more CPU than the cores allow (clock skew): clamped
    assert load.value() == 1.0


def test_cgroup_v1_quota_caps_usable_cores(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("5:cpuacct:/\n4:cpu:/aiml021-edge\n0::/\n")
    group = tmp_path / "root" / "cpu" / "aiml021-edge"
    group.mkdir(parents=True)
    (group / "cpu.cfs_quota_us").write_text("50000\n")
    (group / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(proc, tmp_path / "root") == pytest.approx(0.5)


def test_cgroup_v2_quota_and_no_quota(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("0::/svc\n")
    group = tmp_path / "root" / "svc"
    group.mkdir(parents=True)
    (group / "cpu.max").write_text("25000 100000\n")
    assert usable_cores(proc, tmp_path / "root") == pytest.approx(0.25)
    (group / "cpu.max").write_text("max 100000\n")
    assert usable_cores(proc, tmp_path / "root") >= 1.0
    assert usable_cores(tmp_path / "missing", tmp_path / "root") >= 1.0
