"""The main job: split inference end to end on one machine.

    make demo                                   # or: .venv/bin/python -m benchmarks.e2e.demo

Creates development mTLS certificates, starts the gateway on embedded defaults (onnxruntime,
in-memory stores, the reference bundles in models/), runs the edge agent over the Fashion-MNIST
test set with a progress bar — then the same images cloud-only through the same gateway for
comparison — prints a KPI table, writes a JSON report and PNG plots, and stops everything it
started (also on Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.e2e._shared import (
    BUNDLE,
    ROOT,
    CloudOnly,
    gateway_process,
    load_test_images,
    metric_sum,
)
from benchmarks.e2e.report import (
    PRICE_PER_COMPUTE_S,
    PRICE_PER_GB_IN,
    Kpis,
    Outcome,
    kpis,
    machine_info,
    plot,
    table,
    write_json,
)

log = logging.getLogger(__name__)
COMPUTE_METRIC = "aiml021_gateway_compute_seconds_sum"
DEVICE = "demo-device"


async def run_hybrid(target: str, certs: Path, images: np.ndarray, labels: np.ndarray,
                     concurrency: int, sla_ms: float, progress: bool) -> list[Outcome]:  # fmt: skip
    from tqdm import tqdm

    from edge_agent import EdgeAgent, EdgeSettings

    settings = EdgeSettings(bundle=BUNDLE, gateway=target, device_id=DEVICE,
                            tls={"dir": certs, "server_name": "localhost"},
                            routing={"sla_ms": sla_ms})  # fmt: skip
    outcomes: list[Outcome] = []
    bar = tqdm(total=len(images), desc="hybrid (edge agent)", unit="img", disable=not progress)
    async with EdgeAgent(settings) as agent:
        await agent.wait_connected(15)
        it = iter(range(len(images)))

        async def worker() -> None:
            for i in it:
                t0 = time.perf_counter()
                r = await agent.infer(images[i])
                outcomes.append(Outcome(
                    index=i, label=int(labels[i]), predicted=r.top_class, route=r.route.value,
                    latency_s=time.perf_counter() - t0, bytes_up=r.bytes_sent,
                    exit_index=r.exit_index, error=r.error or "",
                ))  # fmt: skip
                bar.update()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    return outcomes


async def run_cloud_only(target: str, certs: Path, images: np.ndarray, labels: np.ndarray,
                         concurrency: int, progress: bool) -> list[Outcome]:  # fmt: skip
    """Every image to the cloud's full model, raw float32 input, on the same session stream."""
    from tqdm import tqdm

    outcomes: list[Outcome] = []
    bar = tqdm(
        total=len(images), desc="cloud-only (same gateway)", unit="img", disable=not progress
    )
    async with CloudOnly(target, certs, DEVICE) as cloud:
        it = iter(range(len(images)))

        async def worker() -> None:
            for i in it:
                outcomes.append(await cloud.infer(i, images[i], int(labels[i])))
                bar.update()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    bar.close()
    return outcomes


def run_demo(limit: int | None = None, out_dir: Path | None = None, concurrency: int = 16,
             sla_ms: float = 200.0, cloud_only: bool = True, progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Runs the whole demo and returns the report (also written to ``out_dir``)."""
    from common.auth import write_dev_pki

    out_dir = out_dir or ROOT / "out" / "demo"
    images, labels, source = load_test_images(limit)
    with tempfile.TemporaryDirectory(prefix="aiml021-demo-") as tmp:
        work = Path(tmp)
        write_dev_pki(work / "certs", devices=[DEVICE])
        with gateway_process(work, ROOT / "models", work / "certs") as ports:
            gateway_pid = ports["pid"]
            target = f"127.0.0.1:{ports['port']}"
            rows: list[Kpis] = []
            runs: dict[str, list[Outcome]] = {}
            passes = [
                (
                    "hybrid",
                    lambda: run_hybrid(
                        target, work / "certs", images, labels, concurrency, sla_ms, progress
                    ),
                )
            ]
            if cloud_only:
                passes.append(
                    (
                        "cloud-only",
                        lambda: run_cloud_only(
                            target, work / "certs", images, labels, concurrency, progress
                        ),
                    )
                )
            for name, make in passes:
                before = metric_sum(ports["metrics_port"], COMPUTE_METRIC)
                t0 = time.perf_counter()
                outcomes = asyncio.run(make())
                wall = time.perf_counter() - t0
                spent = metric_sum(ports["metrics_port"], COMPUTE_METRIC) - before
                k = kpis(name, outcomes)
                k.cloud_compute_ms_per_1k = spent * 1000 / len(outcomes) * 1000
                up = sum(o.bytes_up for o in outcomes)
                k.cost_per_1k_usd = (
                    (spent * PRICE_PER_COMPUTE_S + up / 1e9 * PRICE_PER_GB_IN)
                    / len(outcomes)
                    * 1000
                )
                rows.append(k)
                runs[name] = outcomes
                log.info("%s: %d requests in %.1f s", name, len(outcomes), wall)
    report = {
        "source": source, "requests": len(images), "gateway_pid": gateway_pid, "concurrency": concurrency, "sla_ms": sla_ms,
        "kpis": [asdict(r) for r in rows], "machine": machine_info(),
        "outcomes": {name: [asdict(o) for o in outs] for name, outs in runs.items()},
    }  # fmt: skip
    write_json(out_dir / "demo.json", report)
    report["plots"] = [str(p) for p in plot(runs["hybrid"], out_dir, "demo")]
    report["table"] = table(rows, f"aiml021 demo — {len(images)} images, {source}")
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N test images only")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--sla-ms", type=float, default=200.0)
    parser.add_argument("--no-cloud-only", action="store_true", help="skip the comparison pass")
    parser.add_argument(
        "--workload", choices=("fmnist", "ocr"), default="fmnist",
        help="ocr: a small OCR fleet on hard 1280x720 frames, KPI table and PNG overlays",
    )  # fmt: skip
    args = parser.parse_args()
    if args.workload == "ocr":
        from benchmarks.ocr.demo import run

        return run(args.out / "ocr")
    logging.basicConfig(level=logging.WARNING)
    report = run_demo(args.limit, args.out, args.concurrency, args.sla_ms, not args.no_cloud_only)
    print(report["table"])
    print(f"\nreport: {args.out / 'demo.json'}\nplots:  {', '.join(report['plots'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
