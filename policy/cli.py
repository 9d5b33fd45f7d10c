"""``aiml021 policy ...``: build traces from a bundle, compare policies in the simulator, check
off-policy estimates, and print a policy's decision for one context."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _load_trace(args: argparse.Namespace) -> Any:
    from policy._trace import Trace, synthetic_trace

    trace = Trace.load(args.trace) if args.trace else synthetic_trace(args.synthetic, seed=0)
    if args.device_exits:
        trace = trace.truncate(args.device_exits)
    return trace


def _sim_config(args: argparse.Namespace) -> Any:
    from policy._objective import ObjectiveWeights
    from policy._simulator import SimConfig

    return SimConfig(
        deadline_ms=args.deadline_ms,
        edge_slowdown=args.edge_slowdown,
        rate_hz=args.rate_hz,
        weights=ObjectiveWeights(error=args.error_weight),
    )


def _simulate(args: argparse.Namespace) -> int:
    from policy._compare import CompareConfig, compare, ope_check
    from policy._network import SCENARIOS

    trace = _load_trace(args)
    network = SCENARIOS[args.network]
    cfg = CompareConfig(
        kinds=tuple(args.policies.split(",")),
        seeds=tuple(range(args.seeds)),
        epochs=args.epochs,
    )
    report = compare(trace, network, _sim_config(args), cfg)
    if args.ope:
        report["ope"] = ope_check(trace, network, _sim_config(args))
    print(f"trace {report['trace']} ({report['images']} images), network {network.kind}, "
          f"{trace.profile.n_exits} exit(s) on the device")  # fmt: skip
    st = report["summary"]["static"]
    print(f"{'policy':<12}{'objective':>12}{'accuracy':>12}{'gain vs static (95% CI)':>32}")
    print(f"{'static':<12}{st['objective']['mean']:>12.4f}{st['accuracy']['mean']:>12.4f}")
    for kind in cfg.kinds:
        s = report["summary"][kind]
        g = s["gain"]
        acc = st["accuracy"]["mean"] + s["accuracy_delta"]["mean"]
        print(f"{kind:<12}{s['objective']['mean']:>12.4f}{acc:>12.4f}"
              f"{g['mean'] * 100:>17.1f}% [{g['low'] * 100:.1f}, {g['high'] * 100:.1f}]")  # fmt: skip
    print(f"best learned policy within accuracy: {report['best_learned']}")
    if args.ope:
        for name, r in report["ope"].items():
            if isinstance(r, dict):
                print(f"OPE {name:<10} on-policy {r['on_policy']['value']:.4f}  "
                      f"IPS {r['ips']['value']:.4f} [{r['ips']['low']:.4f}, {r['ips']['high']:.4f}]  "
                      f"DR {r['dr']['value']:.4f} [{r['dr']['low']:.4f}, {r['dr']['high']:.4f}]")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _traces(args: argparse.Namespace) -> int:
    from common.data import load_fashion_mnist
    from policy.traces import build_trace

    images, labels = load_fashion_mnist(args.split, args.data)
    fit, _ = load_fashion_mnist("validation", args.data)
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    trace = build_trace(args.bundle, images, labels, fit_images=fit[:500])
    trace.save(args.output)
    acc = trace.correct.mean(axis=0)
    print(f"{len(trace)} images; exit accuracies {', '.join(f'{a:.4f}' for a in acc)}; "
          f"cloud (full model) {trace.cloud_correct[:, 0].mean():.4f}")  # fmt: skip
    for cut in trace.profile.cuts:
        for codec, cost in cut.codecs.items():
            print(
                f"  {cut.name:<6} {codec:<10} {cost.bytes:>6} B  drop {cost.accuracy_drop:.2f} pt"
            )
    print(f"wrote {args.output}")
    return 0


def _decide(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from common.errors import InvalidArgument
    from policy._settings import PolicySettings
    from policy._types import DecisionContext

    try:
        settings = PolicySettings(kind=args.kind, profile=args.profile, epsilon=0.0)
    except ValidationError as exc:
        raise InvalidArgument(
            f"--kind: {exc.errors()[0]['msg'].removeprefix('Value error, ')}"
        ) from None
    policy = settings.build()
    confs = tuple(float(c) for c in args.confidences.split(","))
    ctx = DecisionContext(
        exit_index=len(confs) - 1,
        confidences=confs,
        rtt_ms=args.rtt_ms,
        bandwidth_mbps=args.bandwidth_mbps,
        deadline_ms=args.deadline_ms,
    )
    d = policy.decide(ctx)
    print(json.dumps({"action": d.action.value, "cut_point": d.cut_point, "codec": d.codec,
                      "expected_latency_ms": d.expected_latency_ms, "threshold": d.threshold}))  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``aiml021 policy`` and its subcommands."""
    parser = subparsers.add_parser("policy", help="policy engine: traces, simulator, decisions")
    sub = parser.add_subparsers(dest="policy_command", metavar="SUBCOMMAND", required=True)

    sim = sub.add_parser("simulate", help="compare policies on a trace under a network scenario")
    sim.add_argument("--trace", help="trace .npz (default: a synthetic trace)")
    sim.add_argument("--synthetic", type=int, default=10_000, help="synthetic trace size")
    sim.add_argument("--device-exits", type=int, default=0, help="exits the device holds (0: all)")
    sim.add_argument("--network", default="varying", choices=["steady", "varying", "outages"])
    sim.add_argument("--policies", default="heuristic,linucb,thompson,dqn")
    sim.add_argument("--seeds", type=int, default=5)
    sim.add_argument("--epochs", type=int, default=3)
    sim.add_argument("--deadline-ms", type=float, default=100.0)
    sim.add_argument("--edge-slowdown", type=float, default=100.0)
    sim.add_argument("--rate-hz", type=float, default=20.0)
    sim.add_argument("--error-weight", type=float, default=12.0, help="Lagrange weight of errors")
    sim.add_argument("--ope", action="store_true", help="also check off-policy estimates")
    sim.add_argument("--json", help="write the report here")
    sim.set_defaults(func=_simulate)

    tr = sub.add_parser("traces", help="build a trace file from a model bundle")
    tr.add_argument("bundle")
    tr.add_argument("-o", "--output", required=True)
    tr.add_argument("--split", default="test", choices=["test", "validation"])
    tr.add_argument("--data", help="Fashion-MNIST directory (default: AIML021_FASHION_MNIST_DIR)")
    tr.add_argument("--limit", type=int, default=0)
    tr.set_defaults(func=_traces)

    de = sub.add_parser("decide", help="print one decision for a context")
    de.add_argument("--kind", default="heuristic")
    de.add_argument("--profile", required=True, help="policy profile JSON")
    de.add_argument("--confidences", required=True, help="comma-separated, one per exit so far")
    de.add_argument("--rtt-ms", type=float, default=40.0)
    de.add_argument("--bandwidth-mbps", type=float, default=10.0)
    de.add_argument("--deadline-ms", type=float, default=100.0)
    de.set_defaults(func=_decide)


__all__ = ["register"]
