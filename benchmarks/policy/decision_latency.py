"""Decision latency: in-process ``Policy.decide`` for every policy kind, and
``PolicyService.Decide`` over gRPC on loopback (grpc.aio server in a child process, blocking
client here, one call at a time).

    .venv/bin/python -m benchmarks.policy.decision_latency [--n 5000] [--repeats 5]

Policies are measured interleaved (A B C ... A B C ...) with ``--repeats`` rounds; each round
times ``--n`` decisions over varied contexts. Reported: per-round p50/p99 in µs, and the median
and range of those over rounds. Targets (issue 8): p99 ≤ 100 µs heuristic and bandits, ≤ 1 ms DQN,
≤ 2 ms over gRPC. Writes benchmarks/results/policy_decision_latency.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc

from benchmarks.policy._machine import machine_info
from cloud.grpc._policy import add_to_server
from cloud.grpc._policy_converters import context_to_proto
from policy import (
    SCENARIOS,
    DecisionContext,
    HeuristicPolicy,
    Policy,
    SimConfig,
    Simulator,
    StaticThresholdPolicy,
    Trace,
    make_policy,
    synthetic_trace,
)

RESULTS = Path("benchmarks/results")
TRACE = RESULTS / "policy_trace_fmnist_branchy.npz"
TARGET_US = {
    "heuristic": 100,
    "static": 100,
    "linucb": 100,
    "thompson": 100,
    "dqn": 1000,
    "grpc": 2000,
}


def contexts(n: int, n_exits: int, seed: int = 0) -> list[DecisionContext]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        k = int(rng.integers(0, n_exits))
        out.append(
            DecisionContext(
                exit_index=k,
                confidences=tuple(float(c) for c in rng.random(k + 1)),
                entropy=float(rng.random()),
                rtt_ms=float(rng.uniform(5, 200)),
                bandwidth_mbps=float(rng.choice([0.0, 0.5, 5.0, 50.0])),
                edge_load=float(rng.random()),
                deadline_ms=100.0,
                elapsed_ms=float(rng.uniform(0, 50)),
            )
        )
    return out


def policies(trace: Trace) -> dict[str, Policy]:
    sim = Simulator(trace, SCENARIOS["varying"], SimConfig())
    out: dict[str, Policy] = {
        "heuristic": HeuristicPolicy(trace.profile, latency_model=sim.model),
        "static": StaticThresholdPolicy(
            trace.profile, [e.threshold for e in trace.profile.exits], "cut1", "int8"
        ),
    }
    for kind in ("linucb", "thompson", "dqn"):
        pol = make_policy(kind, trace.profile, latency_model=sim.model, epsilon=0.05)
        sim.run(pol, sim.environment(0, n=2000))  # trained state, full-size matrices
        out[kind] = pol
    return out


def time_inprocess(pol: Policy, ctxs: list[DecisionContext]) -> np.ndarray:
    lat = np.empty(len(ctxs))
    clock = time.perf_counter_ns
    for i, c in enumerate(ctxs):
        t0 = clock()
        pol.decide(c)
        lat[i] = clock() - t0
    return lat / 1e3


def _serve(kind: str, port_queue: Any, stop: Any) -> None:
    """Child process: serve PolicyService for a policy of ``kind`` until ``stop`` is set."""

    async def run() -> None:
        trace = Trace.load(TRACE) if TRACE.exists() else synthetic_trace(4000)
        server = grpc.aio.server()
        add_to_server(server, policies(trace)[kind])
        port_queue.put(server.add_insecure_port("127.0.0.1:0"))
        await server.start()
        await asyncio.to_thread(stop.wait)
        await server.stop(None)

    asyncio.run(run())


def time_grpc(kind: str, ctxs: list[DecisionContext], repeats: int) -> list[np.ndarray]:
    """Blocking client in this process, grpc.aio server in a child process (as deployed)."""
    mp = multiprocessing.get_context("spawn")
    ports, stop = mp.Queue(), mp.Event()
    proc = mp.Process(target=_serve, args=(kind, ports, stop), daemon=True)
    proc.start()
    reqs = [policy_pb2.DecideRequest(context=context_to_proto(c)) for c in ctxs]
    rounds = []
    try:
        port = ports.get(timeout=60)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = policy_pb2_grpc.PolicyServiceStub(ch)
            for r in reqs[:300]:
                stub.Decide(r)
            for _ in range(repeats):
                lat = np.empty(len(reqs))
                for i, r in enumerate(reqs):
                    t0 = time.perf_counter_ns()
                    stub.Decide(r)
                    lat[i] = time.perf_counter_ns() - t0
                rounds.append(lat / 1e3)
    finally:
        stop.set()
        proc.join(10)
    return rounds


def summarise(rounds: list[np.ndarray]) -> dict[str, Any]:
    p50 = [float(np.percentile(r, 50)) for r in rounds]
    p99 = [float(np.percentile(r, 99)) for r in rounds]
    return {
        "p50_us": {"median": float(np.median(p50)), "min": min(p50), "max": max(p50)},
        "p99_us": {"median": float(np.median(p99)), "min": min(p99), "max": max(p99)},
        "rounds": len(rounds),
        "decisions_per_round": int(rounds[0].shape[0]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--grpc-n", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    load_before = os.getloadavg()
    trace = Trace.load(TRACE) if TRACE.exists() else synthetic_trace(4000)
    pols = policies(trace)
    ctxs = contexts(args.n, trace.profile.n_exits)
    for pol in pols.values():
        time_inprocess(pol, ctxs[:500])  # warm-up
    rounds: dict[str, list[np.ndarray]] = {k: [] for k in pols}
    for _ in range(args.repeats):
        for name, pol in pols.items():
            rounds[name].append(time_inprocess(pol, ctxs))
    results = {name: summarise(r) for name, r in rounds.items()}
    for kind in ("heuristic", "linucb"):
        results[f"grpc({kind})"] = summarise(time_grpc(kind, ctxs[: args.grpc_n], args.repeats))
    print(
        f"trace: {trace.source}; {args.repeats} rounds; p50/p99 in µs (median over rounds [min, max])"
    )
    print(f"{'policy':<18}{'p50':>10}{'p99':>10}{'p99 range':>20}{'target p99':>12}")
    report: dict[str, Any] = {
        "machine": machine_info(),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "trace": trace.source,
        "command": "python -m benchmarks.policy.decision_latency",
        "results": {},
    }
    for name, s in results.items():
        target = TARGET_US["grpc" if name.startswith("grpc") else name]
        s["target_p99_us"] = target
        s["meets_target"] = s["p99_us"]["median"] <= target
        report["results"][name] = s
        rng = f"[{s['p99_us']['min']:.1f}, {s['p99_us']['max']:.1f}]"
        print(
            f"{name:<18}{s['p50_us']['median']:>10.1f}{s['p99_us']['median']:>10.1f}{rng:>20}{target:>12}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "policy_decision_latency.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
