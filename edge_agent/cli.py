"""``aiml021 edge run``: run the edge agent over an input set with a progress bar and print a
summary table (routes, exits, accuracy when labels exist, latency percentiles, bytes, cache and
replay counters)."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from common.settings import given
from edge_agent._agent import EdgeAgent
from edge_agent._inputs import load_inputs
from edge_agent._settings import EdgeSettings
from edge_agent._types import EdgeResult

FLAGS: dict[str, str] = {
    "bundle": "bundle",
    "gateway": "gateway",
    "tls_dir": "tls.dir",
    "insecure": "tls.insecure",
    "sla_ms": "routing.sla_ms",
    "device_id": "device_id",
    "replay": "replay.path",
    "replay_key_file": "replay.key_file",
}
"""Flag (argparse dest) -> settings key it overrides."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``edge`` with its ``run`` subcommand."""
    edge = subparsers.add_parser("edge", help="edge agent")
    sub = edge.add_subparsers(dest="edge_command", metavar="ACTION")
    run = sub.add_parser(
        "run",
        help="run the agent over an IDX file or image folder",
        description="Flags override AIML021_EDGE_* env vars, which override --config.",
    )
    run.add_argument(
        "--config", type=Path, help="settings file (.toml or .json), see docs/edge_agent.md"
    )
    run.add_argument("--bundle", type=Path, help="model bundle directory [bundle]")
    run.add_argument("--gateway", help="gateway host:port, omit to run offline [gateway]")
    sec = run.add_mutually_exclusive_group()
    sec.add_argument(
        "--tls-dir", type=Path, help="device mTLS directory (ca.pem, ID.pem, ID.key) [tls.dir]"
    )
    sec.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plaintext channel, loopback only [tls.insecure]",
    )
    run.add_argument(
        "--input", type=Path, required=True, help="IDX images (.gz ok), .npy or folder"
    )
    run.add_argument("--limit", type=int, default=0, help="use the first N inputs (0 = all)")
    run.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    run.add_argument("--sla-ms", type=float, help="per-request deadline [routing.sla_ms]")
    run.add_argument("--device-id", help="device id sent in Hello [device_id]")
    run.add_argument("--replay", type=Path, help="replay queue file [replay.path]")
    run.add_argument("--replay-key-file", type=Path, help="queue key file [replay.key_file]")
    run.add_argument("--json", type=Path, help="write the summary as JSON here")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)
    edge.set_defaults(func=lambda _a: edge.print_help() or 2)


def settings_from_args(args: argparse.Namespace) -> EdgeSettings:
    """The edge settings tree from flags > env > ``--config`` > defaults."""
    flags = given(args, FLAGS)
    return EdgeSettings.load(args.config, flags)


async def run_inputs(
    settings: EdgeSettings, images: np.ndarray, concurrency: int, progress: bool
) -> tuple[list[EdgeResult], dict[str, Any], float]:
    """Run every image through one agent; returns results, metrics and wall seconds."""
    from tqdm import tqdm

    results: list[EdgeResult | None] = [None] * len(images)
    sem = asyncio.Semaphore(max(concurrency, 1))
    async with EdgeAgent(settings) as agent:
        if settings.gateway:
            await agent.wait_connected(settings.session.connect_timeout_s)
        bar = tqdm(total=len(images), unit="img", disable=not progress)

        async def one(i: int) -> None:
            async with sem:
                results[i] = await agent.infer(images[i])
                bar.update(1)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(len(images))))
        wall = time.perf_counter() - t0
        bar.close()
        metrics = agent.metrics()
    return [r for r in results if r is not None], metrics, wall


def summarise(
    results: list[EdgeResult], labels: np.ndarray | None, metrics: dict[str, Any], wall: float
) -> dict[str, Any]:
    """The summary record printed and written as JSON."""
    n = len(results)
    lat = np.array([r.timing.total_ms for r in results]) if n else np.zeros(1)
    out: dict[str, Any] = {
        "requests": n,
        "throughput_per_s": n / wall if wall > 0 else 0.0,
        "routes": {k: v / n for k, v in sorted(metrics["routes"].items())} if n else {},
        "exits": metrics["exits"],
        "latency_ms": {q: float(np.percentile(lat, int(q[1:]))) for q in ("p50", "p95", "p99")},
        "bytes_per_request": sum(r.bytes_sent for r in results) / max(n, 1),
        "cache_hit_rate": metrics["cache"]["hit_rate"],
    }
    if labels is not None and n:
        pred = np.array([r.top_class for r in results])
        out["accuracy"] = float((pred == labels[:n]).mean())
    for key in ("replay", "stream", "network"):
        if key in metrics:
            out[key] = metrics[key]
    return out


def _print_table(summary: dict[str, Any]) -> None:
    rows: list[tuple[str, str]] = [("requests", str(summary["requests"]))]
    if "accuracy" in summary:
        rows.append(("accuracy", f"{summary['accuracy'] * 100:.2f}%"))
    for route, share in summary["routes"].items():
        rows.append((f"route {route}", f"{share * 100:.1f}%"))
    for q, v in summary["latency_ms"].items():
        rows.append((f"latency {q}", f"{v:.2f} ms"))
    rows.append(("bytes / request", f"{summary['bytes_per_request']:.0f}"))
    rows.append(("cache hit rate", f"{summary['cache_hit_rate'] * 100:.1f}%"))
    rows.append(("throughput", f"{summary['throughput_per_s']:.0f} req/s"))
    for k, v in summary.get("replay", {}).items():
        rows.append((f"replay {k}", str(v)))
    width = max(len(k) for k, _ in rows)
    print("-" * (width + 16))
    for k, v in rows:
        print(f"{k:<{width}}  {v:>12}")
    print("-" * (width + 16))


def _run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    images, labels = load_inputs(args.input)
    if args.limit:
        images = images[: args.limit]
        labels = None if labels is None else labels[: args.limit]
    results, metrics, wall = asyncio.run(
        run_inputs(settings, images, args.concurrency, not args.no_progress)
    )
    summary = summarise(results, labels, metrics, wall)
    _print_table(summary)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return 0


__all__ = ["FLAGS", "register", "run_inputs", "settings_from_args", "summarise"]
