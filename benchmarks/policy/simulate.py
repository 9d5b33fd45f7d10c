"""Policy comparison in the trace simulator: best static threshold + fixed-cut policy (tuned on
the evaluation data itself) against the heuristic and the learned policies, per device class and
network profile, with 95% intervals over seeds, plus the off-policy evaluation check.

    .venv/bin/python -m benchmarks.policy.simulate [--seeds 5] [--epochs 3] [--quick]

Uses benchmarks/results/policy_trace_fmnist_branchy.npz (real traces of the reference bundle,
``aiml021 policy traces models/fmnist_branchy -o ...``) when present, else a synthetic trace
(labelled as such in the output). Writes benchmarks/results/policy_simulation.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.policy._machine import machine_info
from policy import SCENARIOS, ObjectiveWeights, SimConfig, Trace, synthetic_trace
from policy._compare import CompareConfig, compare, ope_check

RESULTS = Path("benchmarks/results")
TRACE = RESULTS / "policy_trace_fmnist_branchy.npz"


def _pct(ci: dict[str, float]) -> str:
    if ci["n"] == 0 or ci["mean"] != ci["mean"]:
        return "n/a"
    return (
        f"{ci['mean'] * 100:+.1f}% [{ci['low'] * 100:+.1f}, {ci['high'] * 100:+.1f}] (n={ci['n']})"
    )


def scenario_rows(name: str, report: dict[str, Any]) -> list[str]:
    s = report["summary"]
    st = s["static"]
    rows = [
        f"| {name} | static (best, tuned on eval data) | {st['objective']['mean']:.4f} | "
        f"{st['accuracy']['mean'] * 100:.2f} | – | – | – |"
    ]
    for kind, v in s.items():
        if kind == "static":
            continue
        g, d = v["gain"], v["accuracy_delta"]
        rows.append(
            f"| {name} | {kind} | {v['objective']['mean']:.4f} | "
            f"{(st['accuracy']['mean'] + d['mean']) * 100:.2f} | "
            f"{g['mean'] * 100:+.1f}% [{g['low'] * 100:+.1f}, {g['high'] * 100:+.1f}] | "
            f"{d['mean'] * 100:+.2f} | {_pct(v['iso_accuracy_gain'])} |"
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--error-weight", type=float, default=12.0)
    ap.add_argument(
        "--error-weights",
        default="6,12,24",
        help="candidate error weights, chosen per seed and policy on held-out training data",
    )
    ap.add_argument("--quick", action="store_true", help="2 seeds, 1 epoch, varying profile only")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.epochs = 2, 1
    trace = Trace.load(TRACE) if TRACE.exists() else synthetic_trace(10_000)
    label = "REAL" if TRACE.exists() else "SYNTHETIC"
    sim_config = SimConfig(weights=ObjectiveWeights(error=args.error_weight))
    cfg = CompareConfig(
        seeds=tuple(range(args.seeds)),
        epochs=args.epochs,
        error_weights=tuple(float(w) for w in args.error_weights.split(",") if w),
    )
    n_all = trace.profile.n_exits
    # (name, exits on the device, network profile, device slowdown vs one core of this CPU)
    scenarios = [
        ("head-only device 100x, varying", 1, "varying", 100.0),
        ("head-only device 30x, varying", 1, "varying", 30.0),
        ("full backbone on device 100x, varying", n_all, "varying", 100.0),
    ]
    if not args.quick:
        scenarios += [
            ("head-only device 100x, steady", 1, "steady", 100.0),
            ("head-only device 100x, outages", 1, "outages", 100.0),
        ]
    report: dict[str, Any] = {
        "machine": machine_info(),
        "trace": trace.source,
        "trace_kind": label,
        "command": "python -m benchmarks.policy.simulate "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "quick"),
        "scenarios": {},
    }
    md = [
        f"# Policy simulation ({label} traces: {trace.source}, {len(trace)} images)",
        "",
        "Objective: mean per-request resource cost (latency/SLA + SLA breaches + cloud cost + bytes),",
        f"lower is better; accuracy is a constraint. SLA {sim_config.deadline_ms:.0f} ms, device "
        "compute = profiled time × the scenario's slowdown (100×: low-power device, 30×: mid-range) × (1 + load), learned policies "
        f"trained with the error weight (Lagrange multiplier of the accuracy constraint) chosen per seed from {{{args.error_weights}}} on held-out training data. Gain = 1 − objective/static, mean and 95% "
        f"t-interval over {args.seeds} seeds. The static baseline is the cheapest static policy "
        "reaching the full model's accuracy − 1 point on the evaluation data (the most accurate static "
        "policy where none does); iso-accuracy gain compares with the cheapest static policy at least "
        "as accurate as the learned one (seeds where one exists).",
        "",
        "| scenario | policy | objective | accuracy % | gain vs static | Δ accuracy (pt) | iso-accuracy gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, exits, prof, slowdown in scenarios:
        t0 = time.time()
        tr = trace.truncate(exits)
        rep = compare(tr, SCENARIOS[prof], replace(sim_config, edge_slowdown=slowdown), cfg)
        rep["seconds"] = time.time() - t0
        report["scenarios"][name] = rep
        md += scenario_rows(name, rep)
        print(f"{name}: best learned {rep['best_learned']} ({rep['seconds']:.0f} s)")
        for kind, v in rep["summary"].items():
            if kind != "static":
                g = v["gain"]
                print(f"  {kind:<10} gain {g['mean'] * 100:+.1f}% [{g['low'] * 100:+.1f}, {g['high'] * 100:+.1f}]"
                      f"  Δacc {v['accuracy_delta']['mean'] * 100:+.2f} pt")  # fmt: skip
    ope = ope_check(trace.truncate(1), SCENARIOS["varying"], sim_config)
    report["ope"] = ope
    md += ["", "## Off-policy evaluation (logging: heuristic + ε=0.3, head-only device, varying)", "",
           "| target | on-policy | IPS [95% CI] | DR [95% CI] |", "|---|---|---|---|"]  # fmt: skip
    for name, r in ope.items():
        if isinstance(r, dict):
            md.append(
                f"| {name} | {r['on_policy']['value']:.4f} | {r['ips']['value']:.4f} "
                f"[{r['ips']['low']:.4f}, {r['ips']['high']:.4f}] {'✓' if r['ips_agrees'] else '✗'} | "
                f"{r['dr']['value']:.4f} [{r['dr']['low']:.4f}, {r['dr']['high']:.4f}] "
                f"{'✓' if r['dr_agrees'] else '✗'} |"
            )
            print(
                f"OPE {name}: on {r['on_policy']['value']:.4f} IPS ok={r['ips_agrees']} DR ok={r['dr_agrees']}"
            )
    md += ["", f"Command: `{report['command']}`", ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "policy_simulation.json").write_text(json.dumps(report, indent=2))
    (RESULTS / "policy_simulation.md").write_text("\n".join(md))
    print("wrote benchmarks/results/policy_simulation.{json,md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
