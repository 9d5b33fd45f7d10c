"""REST throughput next to gRPC, one gateway, A B A B.

    .venv/bin/python -m benchmarks.rest.run [--seconds 3] [--repeats 3] [--concurrency 32]

Starts ``aiml021 serve`` (plaintext on loopback, result cache off, no metadata store, no
per-device rate limit: the generators repeat one input and are one client driving the gateway to
capacity) with its REST front door, and measures closed-loop batch-1 requests of the reference
model through:

  rest-v2-json     tritonclient.http.aio, JSON tensors both ways
  rest-v2-binary   tritonclient.http.aio, the binary-data extension both ways
  rest-v1-json     POST /v1/infer, proto3 JSON with base64 raw contents (aiohttp)
  grpc-infer       tritonclient.grpc.aio ModelInfer (benchmarks/gateway/loadgen_triton.py)
  grpc-stream      tritonclient.grpc.aio ModelStreamInfer

Every target runs once per round, rounds repeated; medians with min–max. Also the gateway
process's own CPU per measured request (/proc/<pid>/stat), which separates the server's cost from
the load generator's on a shared machine. Writes benchmarks/results/rest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
RESULTS = ROOT / "benchmarks" / "results" / "rest.json"
ENV = {
    **os.environ,
    "AIML021_GATEWAY_CACHE__FULL_MODELS": "false",
    "AIML021_GATEWAY_LIMITS__REQUESTS_PER_S": "0",
}


def _start(models: Path, port_file: Path) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    cmd = [PY, "-m", "cloud", "serve", "--models", str(models), "--port", "0", "--rest-port",
           "0", "--metrics-port", "0", "--insecure", "--port-file", str(port_file),
           "--metadata-url", "none"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV
    )
    for _ in range(1200):
        if port_file.exists() and port_file.read_text().strip():
            return proc, json.loads(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("gateway did not start")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _loadgen(module: str, cfg: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-m", module, json.dumps(cfg)], cwd=ROOT, capture_output=True, text=True, timeout=180
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description="REST vs gRPC throughput (A B A B)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[32])
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    models, model = ROOT / "models", "fmnist_branchy"
    if not (models / model / "manifest.json").exists():
        raise SystemExit(f"{models / model}/manifest.json missing: restore models/ from git")
    tmp = Path(tempfile.mkdtemp(prefix="aiml021-restbench-"))
    proc, ports = _start(models, tmp / "ports.json")
    rest = {"url": f"127.0.0.1:{ports['rest_port']}", "model": model}
    grpc_ = {"url": f"127.0.0.1:{ports['port']}", "model": model}
    rl, gl = "benchmarks.rest.loadgen_rest", "benchmarks.gateway.loadgen_triton"
    targets = {
        "rest-v2-json": (rl, {**rest, "mode": "v2-json"}),
        "rest-v2-binary": (rl, {**rest, "mode": "v2-binary"}),
        "rest-v1-json": (rl, {**rest, "mode": "v1-json"}),
        "grpc-infer": (gl, {**grpc_, "mode": "unary"}),
        "grpc-stream": (gl, {**grpc_, "mode": "stream"}),
    }
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {t: {} for t in targets}
    try:
        for rep in range(args.repeats):
            for c in args.concurrency:
                for name, (module, cfg) in targets.items():
                    cpu0 = _cpu_s(proc.pid)
                    r = _loadgen(module, {**cfg, "concurrency": c, "seconds": args.seconds,
                                          "warmup": args.warmup})  # fmt: skip
                    # the gateway's CPU per measured request: an upper bound (the warm-up's
                    # requests cost CPU too but are not counted)
                    if r.get("count"):
                        r["gateway_cpu_ms_per_request"] = (
                            (_cpu_s(proc.pid) - cpu0) * 1e3 / r["count"]
                        )
                    runs[name].setdefault(c, []).append(r)
                    print(f"rep {rep} c={c:<4} {name:<15} {r.get('throughput', 0):8.0f}/s "
                          f"p50 {r.get('p50_ms') or 0:6.2f} ms p99 {r.get('p99_ms') or 0:6.2f} ms "
                          f"{r.get('error', '')}", flush=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)

    summary: dict[str, dict[str, Any]] = {}
    for name, by_c in runs.items():
        for c, rs in by_c.items():
            ok = [r for r in rs if "throughput" in r]
            if ok:
                tps = [r["throughput"] for r in ok]
                summary.setdefault(name, {})[str(c)] = {
                    "throughput_median": statistics.median(tps),
                    "throughput_min": min(tps),
                    "throughput_max": max(tps),
                    "p50_ms_median": statistics.median(r["p50_ms"] for r in ok),
                    "p99_ms_median": statistics.median(r["p99_ms"] for r in ok),
                    "gateway_cpu_ms_per_request_median": statistics.median(
                        r["gateway_cpu_ms_per_request"] for r in ok
                    ),
                    "repeats": len(ok),
                }
    ratios: dict[str, dict[str, float]] = {}
    for a in ("rest-v2-json", "rest-v2-binary", "rest-v1-json"):
        for base in ("grpc-infer", "grpc-stream"):
            for c in map(str, args.concurrency):
                if c in summary.get(a, {}) and c in summary.get(base, {}):
                    ratios.setdefault(f"{a}/{base}", {})[c] = (
                        summary[a][c]["throughput_median"] / summary[base][c]["throughput_median"]
                    )
    import aiohttp
    import onnxruntime
    import uvicorn

    result = {
        "benchmark": "rest",
        "model": f"models/{model} (reference bundle, full model), batch-1 requests",
        "seconds_per_run": args.seconds,
        "warmup_s": args.warmup,
        "repeats": args.repeats,
        "command": " ".join([Path(PY).name, "-m", "benchmarks.rest.run", *sys.argv[1:]]),
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "uvicorn": uvicorn.__version__,
            "aiohttp": aiohttp.__version__,
            "onnxruntime": onnxruntime.__version__,
            "loadavg_at_end": os.getloadavg(),
        },
        "summary": summary,
        "ratios_throughput": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\n{args.repeats} repeats x {args.seconds}s per cell; medians [min-max]")
    print(f"{'target':<15} {'conc':>5} {'inf/s':>8} {'range':>13} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'gw cpu ms/req':>13}")  # fmt: skip
    for name, cells in summary.items():
        for c, s in cells.items():
            rng = f"{s['throughput_min']:.0f}-{s['throughput_max']:.0f}"
            print(f"{name:<15} {c:>5} {s['throughput_median']:8.0f} {rng:>13} "
                  f"{s['p50_ms_median']:8.2f} {s['p99_ms_median']:8.2f} "
                  f"{s['gateway_cpu_ms_per_request_median']:13.2f}")  # fmt: skip
    for k, v in ratios.items():
        print(f"{k:<30} " + "  ".join(f"c={c}: {r:.2f}" for c, r in v.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
