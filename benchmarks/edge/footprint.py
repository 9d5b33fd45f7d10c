"""Edge footprint with the reference bundle: resident memory, import time and per-request local
latency of the edge agent, against a bare onnxruntime baseline measured in the same run.

    .venv/bin/python -m benchmarks.edge.footprint [--bundle models/fmnist_branchy] [--n 2000]
        [--repeats 3] [--json benchmarks/results/edge_footprint.json]

Each repeat runs in a fresh subprocess, alternating baseline and agent (A B A B): the baseline
imports onnxruntime and runs the bundle's ``full`` model on one thread; the agent imports
``edge_agent``, opens an offline EdgeAgent (no gateway, cache off) and answers every image
locally (early exits as calibrated, else the rest of the chain). RSS is VmRSS/VmHWM from
/proc/self/status after the run. Inputs are the Fashion-MNIST test images.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

_CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
mode, bundle, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "agent":
    import edge_agent
else:
    import onnxruntime
import_s = time.perf_counter() - t0
import asyncio
import numpy as np
from common.data import load_fashion_mnist
images = load_fashion_mnist("test")[0][:n]

def rss():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out

lat = []
routes = {}
if mode == "agent":
    from edge_agent import EdgeAgent, EdgeSettings
    async def run():
        async with EdgeAgent(EdgeSettings(bundle=bundle, cache={"entries": 0})) as agent:
            for im in images[:50]:
                await agent.infer(im)
            for im in images:
                t = time.perf_counter()
                r = await agent.infer(im)
                lat.append((time.perf_counter() - t) * 1e3)
                routes[r.exit_name] = routes.get(r.exit_name, 0) + 1
    asyncio.run(run())
else:
    from common.bundle import load_bundle
    b = load_bundle(bundle)
    sess = b.session(b.manifest.full, threads=1)
    name = b.manifest.input.name
    for im in images[:50]:
        sess.run(None, {name: b.preprocess(im)})
    for im in images:
        t = time.perf_counter()
        sess.run(None, {name: b.preprocess(im)})
        lat.append((time.perf_counter() - t) * 1e3)
print(json.dumps({"import_s": import_s, "rss_mb": rss(), "lat_ms": lat, "exits": routes}))
"""


def _child(mode: str, bundle: str, n: int) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, mode, bundle, str(n)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _versions() -> dict[str, str]:
    import grpc
    import onnxruntime

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "grpcio": grpc.__version__,
    }


def _spread(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {"median": float(np.median(arr)), "min": float(arr.min()), "max": float(arr.max())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default="models/fmnist_branchy")
    p.add_argument("--n", type=int, default=2000, help="images per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/edge_footprint.json")
    args = p.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "agent": []}
    for _ in range(args.repeats):
        for mode in ("baseline", "agent"):
            runs[mode].append(_child(mode, args.bundle, args.n))
    summary: dict[str, Any] = {}
    for mode, rs in runs.items():
        p50 = [float(np.percentile(r["lat_ms"], 50)) for r in rs]
        p95 = [float(np.percentile(r["lat_ms"], 95)) for r in rs]
        summary[mode] = {
            "import_s": _spread([r["import_s"] for r in rs]),
            "rss_mb": _spread([r["rss_mb"]["VmRSS"] for r in rs]),
            "peak_rss_mb": _spread([r["rss_mb"]["VmHWM"] for r in rs]),
            "latency_p50_ms": _spread(p50),
            "latency_p95_ms": _spread(p95),
            "exit_share": {k: v / args.n for k, v in rs[-1]["exits"].items()},
        }
    a, b = summary["agent"], summary["baseline"]
    rows = [
        ("import time (s)", "import_s"),
        ("RSS after run (MB)", "rss_mb"),
        ("peak RSS (MB)", "peak_rss_mb"),
        ("latency p50 (ms)", "latency_p50_ms"),
        ("latency p95 (ms)", "latency_p95_ms"),
    ]
    print(
        f"{'metric':<22}{'baseline ort full':>20}{'edge agent':>14}{'ratio':>8}   (median [min..max] of {args.repeats})"
    )
    for label, key in rows:
        bm, am = b[key]["median"], a[key]["median"]
        print(
            f"{label:<22}{bm:>20.3f}{am:>14.3f}{am / bm:>8.2f}   "
            f"[{a[key]['min']:.3f}..{a[key]['max']:.3f}]"
        )
    print(
        f"agent exit share: {a['exit_share']}  (goal: RSS <= 150 MB -> "
        f"{'met' if a['peak_rss_mb']['max'] <= 150 else 'MISSED'})"
    )
    record = {
        "benchmark": "edge_footprint",
        "command": "python -m benchmarks.edge.footprint " + " ".join(argv or sys.argv[1:]),
        "bundle": args.bundle,
        "images_per_repeat": args.n,
        "repeats": args.repeats,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), **_versions()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": summary,
        "goal": {"peak_rss_mb_max": 150, "met": a["peak_rss_mb"]["max"] <= 150},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
