"""Hybrid vs cloud-only (our gateway) vs cloud-only (real Triton) vs edge-only, over an emulated
network, at open-loop rates relative to the measured capacity of cloud-only.

    sudo .venv/bin/python -m benchmarks.e2e.run            # all network scenarios (needs root: netns, tc, cgroups)
    .venv/bin/python -m benchmarks.e2e.run --networks 4g --rates 0.8 --n 1500

Topology: an edge and a cloud network namespace joined by a veth pair; tbf shapes each direction
to the profile's bandwidth; in the cloud namespace a userspace link emulator (benchmarks.e2e.linkem)
adds delay, jitter, retransmission delay for "lost" chunks and outages in front of the gateway and
of Triton; the edge load process runs in the edge namespace under a cgroup CPU quota. Results:
benchmarks/results/e2e.json and BENCHMARKS.md's table (``--write-md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.e2e.netns import CpuQuota, Topology
from benchmarks.e2e.report import (
    PRICE_PER_COMPUTE_S,
    PRICE_PER_GB_IN,
    Kpis,
    Outcome,
    kpis,
    machine_info,
    table,
    write_json,
)

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


@dataclass(frozen=True)
class NetworkScenario:
    name: str
    rtt_ms: float
    bandwidth_mbit: float
    jitter_ms: float = 0.0
    loss: float = 0.0
    outage_period_s: float = 0.0
    outage_duration_s: float = 0.0

    def link(self) -> dict[str, float]:
        return {
            "delay_s": self.rtt_ms / 2000, "jitter_s": self.jitter_ms / 2000, "loss": self.loss,
            "outage_period_s": self.outage_period_s, "outage_duration_s": self.outage_duration_s,
        }  # fmt: skip


SCENARIOS = {
    p.name: p
    for p in (
        NetworkScenario("lan", rtt_ms=2, bandwidth_mbit=1000),
        NetworkScenario("wifi", rtt_ms=20, bandwidth_mbit=50, jitter_ms=4, loss=0.001),
        NetworkScenario("4g", rtt_ms=50, bandwidth_mbit=10, jitter_ms=10, loss=0.005),
        NetworkScenario("3g", rtt_ms=150, bandwidth_mbit=1, jitter_ms=30, loss=0.01),
        NetworkScenario(
            "outages",
            rtt_ms=50,
            bandwidth_mbit=10,
            jitter_ms=10,
            loss=0.005,
            outage_period_s=10,
            outage_duration_s=2,
        ),
    )
}
SYSTEMS = ("hybrid", "cloud", "triton", "edge")


class CloudSide:
    """benchmarks.e2e.cloud_side running in the cloud namespace."""

    def __init__(self, topo: Topology, tls_dir: Path) -> None:
        cmd = [
            *topo.exec_prefix(topo.cloud_ns), sys.executable, "-m", "benchmarks.e2e.cloud_side", "--listen", topo.cloud_addr,
            "--tls-dir", str(tls_dir),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("cloud side failed to start")
        self.info: dict[str, Any] = json.loads(line)

    def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(60)


def run_edge(
    topo: Topology, quota: CpuQuota, args: list[str], out: Path, timeout: float
) -> dict[str, Any]:
    cmd = [
        *topo.exec_prefix(topo.edge_ns),
        sys.executable,
        "-m",
        "benchmarks.e2e.edge_load",
        *args,
        "--out",
        str(out),
    ]
    proc = subprocess.run(
        cmd, preexec_fn=quota.preexec, capture_output=True, text=True, cwd=ROOT, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"edge load failed: {proc.stderr[-3000:]}")
    return dict(json.loads(out.read_text()))


def measure(
    topo: Topology, quota: CpuQuota, cloud: CloudSide, tls_dir: Path, work: Path,
    system: str, rate: float, n: int, offset: int, sla_ms: float, seed: int,
) -> dict[str, Any]:  # fmt: skip
    target_port = cloud.info["triton"] if system == "triton" else cloud.info["gateway"]
    args = [
        "--system", system, "--target", f"{topo.cloud_addr}:{target_port}", "--tls-dir", str(tls_dir),
        "--triton-model", cloud.info["triton_model"], "--n", str(n), "--offset", str(offset),
        "--rate", str(rate), "--sla-ms", str(sla_ms), "--seed", str(seed),
    ]  # fmt: skip
    before = cloud.call(cmd="counters")
    t0 = time.monotonic()
    result = run_edge(
        topo, quota, args, work / f"{system}.json", timeout=max(600, 4 * n / max(rate, 1))
    )
    after = cloud.call(cmd="counters")
    key = "triton" if system == "triton" else "gateway"
    wire = [a - b for a, b in zip(after["bytes"][key], before["bytes"][key], strict=True)]
    compute_s = after[f"{key}_compute_s"] - before[f"{key}_compute_s"]
    outcomes = [Outcome(**o) for o in result["outcomes"]]
    k = kpis(system, outcomes)
    # Wire bytes and cloud compute come from the link emulator and the servers' own metrics (all
    # protocol overhead included, warm-up included: spread over the measured requests).
    warm = 20
    total = len(outcomes) + warm
    k.bytes_per_request = sum(wire) / total
    k.cloud_compute_ms_per_1k = compute_s * 1000 / total * 1000
    k.cost_per_1k_usd = (
        (compute_s * PRICE_PER_COMPUTE_S + wire[0] / 1e9 * PRICE_PER_GB_IN) / total * 1000
    )
    return {"kpis": asdict(k), "throughput": result["throughput"], "wall_s": time.monotonic() - t0}


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    h = rows["hybrid"]["kpis"]
    for base in ("cloud", "triton"):
        if base not in rows:
            continue
        b = rows[base]["kpis"]
        out[f"vs_{base}"] = {
            "p50_speedup": b["p50_ms"] / h["p50_ms"],
            "p95_reduction": 1 - h["p95_ms"] / b["p95_ms"],
            "compute_reduction": 1 - h["cloud_compute_ms_per_1k"] / b["cloud_compute_ms_per_1k"]
            if b["cloud_compute_ms_per_1k"] else float("nan"),
            "accuracy_delta_points": (h["accuracy"] - b["accuracy"]) * 100,
        }  # fmt: skip
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    parser.add_argument("--rates", nargs="+", type=float, default=[0.25, 0.5, 0.8])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--n", type=int, default=2000, help="most requests per run")
    parser.add_argument("--min-n", type=int, default=300, help="fewest requests per run")
    parser.add_argument("--seconds", type=float, default=30.0, help="target duration of a run")
    parser.add_argument("--capacity-n", type=int, default=1500)
    parser.add_argument("--edge-cores", type=float, default=0.5, help="CPU quota of the device")
    parser.add_argument("--sla-ms", type=float, default=500.0)
    parser.add_argument("--repeats", type=int, default=1, help="A B A B repeats per cell")
    parser.add_argument("--out", type=Path, default=RESULTS / "e2e.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    work = Path(tempfile.mkdtemp(prefix="aiml021-e2e-"))
    tls_dir = work / "certs"
    topo = Topology()
    subprocess.run(
        [sys.executable, "-m", "common.cli", "certs", "-o", str(tls_dir), "--device", "bench-device",
         "--host", "localhost", "--host", topo.cloud_addr], check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip
    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.e2e.run", *sys.argv[1:]]),
        "machine": machine_info(), "edge_cores": args.edge_cores, "sla_ms": args.sla_ms,
        "profiles": {}, "approximations": APPROXIMATIONS,
    }  # fmt: skip
    with topo, CpuQuota("aiml021-edge", args.edge_cores) as quota:
        cloud = CloudSide(topo, tls_dir)
        try:
            for name in args.networks:
                prof = SCENARIOS[name]
                topo.shape(prof.bandwidth_mbit)
                cloud.call(cmd="impair", **prof.link())
                cap = measure(
                    topo,
                    quota,
                    cloud,
                    tls_dir,
                    work,
                    "cloud",
                    0,
                    args.capacity_n,
                    0,
                    args.sla_ms,
                    0,
                )
                capacity = cap["throughput"]
                log.info("%s: cloud-only capacity %.0f req/s", name, capacity)
                cells = []
                for frac in args.rates:
                    rate = frac * capacity
                    n = int(min(args.n, max(args.min_n, rate * args.seconds)))
                    reps: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
                    for rep in range(args.repeats):
                        order = args.systems if rep % 2 == 0 else list(reversed(args.systems))
                        for system in order:
                            r = measure(topo, quota, cloud, tls_dir, work, system, rate, n,
                                        1000 * rep, args.sla_ms, rep)  # fmt: skip
                            reps[system].append(r)
                            log.info(
                                "%s %.0f%% %s: %s",
                                name,
                                frac * 100,
                                system,
                                {k: r["kpis"][k] for k in ("accuracy", "p50_ms", "p95_ms")},
                            )
                    rows = {s: _median(v) for s, v in reps.items()}
                    cells.append({"fraction": frac, "rate": rate, "n": n, "systems": rows, "repeats": reps,
                                  "ratios": ratios(rows)})  # fmt: skip
                    print(table([Kpis(**rows[s]["kpis"]) for s in args.systems],
                                f"\n{name}: {frac:.0%} of cloud-only capacity ({rate:.0f} req/s)"))  # fmt: skip
                report["profiles"][name] = {
                    "profile": asdict(prof),
                    "capacity": capacity,
                    "cells": cells,
                }
                write_json(args.out, report)
        finally:
            cloud.close()
    write_json(args.out, report)
    print(f"\nwrote {args.out}")
    return 0


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    keys = runs[0]["kpis"].keys()
    med = {}
    for k in keys:
        vals = [r["kpis"][k] for r in runs]
        med[k] = (
            float(np.median(vals))
            if isinstance(vals[0], int | float) and not isinstance(vals[0], bool)
            else vals[0]
        )
    med["requests"] = int(med["requests"])
    return {"kpis": med, "throughput": float(np.median([r["throughput"] for r in runs]))}


APPROXIMATIONS = [
    "One edge process stands in for the device fleet: it issues all requests of a run from one "
    "session stream under a cgroup CPU quota (edge_cores).",
    "Delay/jitter/outages come from a userspace TCP proxy (no netem qdisc in this kernel); a lost "
    "chunk arrives one 200 ms retransmission timeout late instead of being dropped.",
    "Bandwidth is shaped by tbf on each end of the veth pair (burst ~4 ms of data).",
    "Gateway, Triton, the link emulators and the edge process share the same 2 CPU cores.",
    "Cloud compute = backend compute seconds from each server's own metrics (gateway: "
    "aiml021_gateway_compute_seconds; Triton: nv_inference_compute_infer_duration_us) over the run.",
    "Triton's nv_inference_compute_infer_duration_us adds a batch's compute time once per request "
    "in the batch, so under batching it overstates Triton's compute relative to the gateway's "
    "per-batch figure; the acceptance ratios use our gateway (cloud) as the cloud-only baseline.",
    "Triton is plaintext gRPC (as typically deployed behind a TLS terminator); our gateway uses mTLS.",
]


if __name__ == "__main__":
    raise SystemExit(main())
