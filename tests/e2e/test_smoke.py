"""A few hundred requests through the whole path: dev mTLS certs, the gateway as a child
process on embedded defaults, the edge agent over real Fashion-MNIST images, cloud-only
comparison on the same gateway; checks accuracy, route accounting and clean shutdown."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from benchmarks.e2e.demo import run_demo

N = 300


async def test_demo_path_end_to_end(tmp_path: Path) -> None:
    # The demo runs its own event loops (asyncio.run); a worker thread keeps them apart from
    # the test's loop.
    report = await asyncio.to_thread(
        run_demo, limit=N, out_dir=tmp_path, concurrency=8, sla_ms=2000, progress=False
    )

    hybrid, cloud = report["kpis"]
    assert (hybrid["system"], cloud["system"]) == ("hybrid", "cloud-only")
    for row in (hybrid, cloud):
        assert row["requests"] == N
        assert row["error_rate"] == 0.0
        assert sum(row["routes"].values()) == N
    # Route accounting: every hybrid request is answered on the device or by the cloud.
    assert set(hybrid["routes"]) <= {"edge", "cloud", "edge_fallback"}
    assert hybrid["local_exit_rate"] + hybrid["offload_rate"] == 1.0
    assert hybrid["local_exit_rate"] >= 0.4
    assert cloud["routes"] == {"cloud": N}
    # Real model, real data: the reference backbone is ~94.7% on the test set.
    assert hybrid["accuracy"] >= 0.90 and cloud["accuracy"] >= 0.90
    assert abs(hybrid["accuracy"] - cloud["accuracy"]) <= 0.03
    # Early exits and codecs cut what crosses the network and what the cloud computes.
    assert hybrid["bytes_per_request"] < cloud["bytes_per_request"] / 5
    assert hybrid["cloud_compute_ms_per_1k"] < cloud["cloud_compute_ms_per_1k"]
    # Offloaded requests carried features; local ones carried nothing.
    outcomes = report["outcomes"]["hybrid"]
    assert all(o["bytes_up"] == 0 for o in outcomes if o["route"] == "edge")
    assert all(o["bytes_up"] > 0 for o in outcomes if o["route"] == "cloud")

    assert (tmp_path / "demo.json").is_file()
    assert all(Path(p).is_file() and Path(p).stat().st_size > 1000 for p in report["plots"])
    # The gateway it started is gone.
    assert not os.path.exists(f"/proc/{report['gateway_pid']}")
