"""Renders benchmarks/results/e2e.json as the end-to-end section of BENCHMARKS.md.

.venv/bin/python -m benchmarks.e2e.markdown [benchmarks/results/e2e.json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

TARGETS = """Acceptance (4G at 80% of cloud-only capacity): hybrid p95 >= 40% below both cloud-only
baselines, cloud compute per 1k requests >= 30% below, accuracy within 1.0 point of cloud-only,
local exit rate >= 40%; at every rate, hybrid p50 >= 3x lower than cloud-only."""


def _spread(runs: list[dict[str, Any]], key: str) -> str:
    if len(runs) < 2:
        return ""
    vals = [r["kpis"][key] for r in runs]
    return f" ({min(vals):.1f}–{max(vals):.1f})"


def _row(system: str, k: dict[str, Any], runs: list[dict[str, Any]]) -> str:
    return (
        f"| {system} | {k['accuracy']:.2%} | {k['local_exit_rate']:.1%} | {k['fallback_rate']:.1%} | "
        f"{k['p50_ms']:.1f}{_spread(runs, 'p50_ms')} | {k['p95_ms']:.1f}{_spread(runs, 'p95_ms')} | "
        f"{k['p99_ms']:.1f} | {k['bytes_per_request']:.0f} | "
        f"{k['cloud_compute_ms_per_1k']:.0f} | {k['cost_per_1k_usd'] * 1e3:.3f} |"
    )


def render(report: dict[str, Any]) -> str:
    lines = [
        "## End to end: hybrid vs cloud-only vs edge-only over an emulated network",
        "",
        f"Command: `sudo {report['command']}` (root: network namespaces, tc, cgroups). "
        f"Device CPU quota {report['edge_cores']} core; request SLA {report['sla_ms']:.0f} ms; "
        f"machine: {report['machine']['cpu_count']} cores, {report['machine']['platform']}.",
        "",
        TARGETS,
        "",
        "Systems: **hybrid** = our edge agent (early exits, heuristic policy, cut-point codec, one "
        "mTLS session stream); **cloud** = cloud-only through our gateway (raw float32 input, full "
        "model, same stream); **triton** = cloud-only through a real Triton (nvidia-pytriton) with "
        "tritonclient; **edge** = edge-only (whole backbone on the device).",
        "",
        "Columns: latency in ms from the scheduled (Poisson) arrival; bytes = both directions on the "
        "wire incl. TLS/gRPC overhead (measured at the link emulator); compute = backend compute "
        "ms per 1,000 requests from each server's own metrics; cost = USD per 1,000 requests x 1000 "
        "(price table in the JSON). With repeats, cells are medians and (min–max) the spread; "
        "repeats run A B … B A.",
    ]
    for name, prof in report["profiles"].items():
        p = prof["profile"]
        lines += [
            "",
            f"### {name}: RTT {p['rtt_ms']:.0f} ms, {p['bandwidth_mbit']:g} Mbit/s, jitter "
            f"{p['jitter_ms']:.0f} ms, loss {p['loss']:.1%}"
            + (
                f", outage {p['outage_duration_s']:.0f} s every {p['outage_period_s']:.0f} s"
                if p["outage_period_s"]
                else ""
            )
            + f" — cloud-only capacity {prof['capacity']:.0f} req/s",
        ]
        for cell in prof["cells"]:
            lines += [
                "",
                f"**{cell['fraction']:.0%} of capacity ({cell['rate']:.0f} req/s, {cell.get('n', '?')} requests)**",
                "",
                "| system | accuracy | local exits | fallbacks | p50 | p95 | p99 | bytes/req | compute ms/1k | cost/1k (m$) |",
                "|---|---|---|---|---|---|---|---|---|---|",
            ]
            lines += [
                _row(s, v["kpis"], cell["repeats"].get(s, [])) for s, v in cell["systems"].items()
            ]
            for base, r in cell["ratios"].items():
                lines.append(
                    f"\nhybrid {base.replace('_', ' ')}: p50 {r['p50_speedup']:.1f}x lower, p95 "
                    f"{r['p95_reduction']:.0%} lower, cloud compute {r['compute_reduction']:.0%} lower, "
                    f"accuracy {r['accuracy_delta_points']:+.2f} points."
                )
    lines += ["", "Approximations:", ""] + [f"- {a}" for a in report["approximations"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "benchmarks" / "results" / "e2e.json"
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
