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

from common.errors import InvalidArgument
from edge_agent._agent import EdgeAgent
from edge_agent._inputs import load_inputs
from edge_agent._settings import EdgeSettings
from edge_agent._types import EdgeResult


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``edge`` with its ``run`` subcommand."""
    edge = subparsers.add_parser("edge", help="edge agent")
    sub = edge.add_subparsers(dest="edge_command", metavar="ACTION")
    run = sub.add_parser("run", help="run the agent over an IDX file or image folder")
    run.add_argument("--bundle", type=Path, required=True, help="model bundle directory")
    run.add_argument("--gateway", help="gateway host:port (omit to run offline)")
    sec = run.add_mutually_exclusive_group()
    sec.add_argument(
        "--tls-dir", type=Path, help="device mTLS directory (ca.pem, device.pem, device.key)"
    )
    sec.add_argument("--insecure", action="store_true", help="plaintext channel (loopback only)")
    run.add_argument(
        "--input", type=Path, required=True, help="IDX images (.gz ok), .npy or folder"
    )
    run.add_argument("--limit", type=int, default=0, help="use the first N inputs (0 = all)")
    run.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    run.add_argument("--sla-ms", type=float, help="per-request deadline")
    run.add_argument("--device-id", help="device id sent in Hello")
    run.add_argument("--replay", type=Path, help="replay queue file (enables offline replay)")
    run.add_argument("--replay-key-file", type=Path, help="AES-256-GCM key file for the queue")
    run.add_argument("--json", type=Path, help="write the summary as JSON here")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(func=_run)
    edge.set_defaults(func=lambda _a: edge.print_help() or 2)


def _settings(args: argparse.Namespace) -> EdgeSettings:
    overrides: dict[str, Any] = {"bundle": args.bundle}
    if args.gateway:
        overrides["gateway"] = args.gateway
    if args.insecure:
        overrides["insecure"] = True
    if args.tls_dir:
        overrides["tls_dir"] = args.tls_dir
    if args.sla_ms:
        overrides["sla_ms"] = args.sla_ms
    if args.device_id:
        overrides["device_id"] = args.device_id
    if args.replay:
        overrides["replay_path"] = args.replay
    if args.replay_key_file:
        overrides["replay_key_file"] = args.replay_key_file
    try:
        return EdgeSettings(**overrides)
    except ValueError as exc:
        raise InvalidArgument(str(exc)) from None


async def run_inputs(
    settings: EdgeSettings, images: np.ndarray, concurrency: int, progress: bool
) -> tuple[list[EdgeResult], dict[str, Any], float]:
    """Run every image through one agent; returns results, metrics and wall seconds."""
    from tqdm import tqdm

    results: list[EdgeResult | None] = [None] * len(images)
    sem = asyncio.Semaphore(max(concurrency, 1))
    async with EdgeAgent(settings) as agent:
        if settings.gateway:
            await agent.wait_connected(settings.connect_timeout_s)
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
    settings = _settings(args)
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


__all__ = ["register", "run_inputs", "summarise"]
