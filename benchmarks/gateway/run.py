"""Gateway benchmark: one command, same machine, same load generators, A B A B.

    .venv/bin/python -m benchmarks.gateway.run [--seconds 2] [--repeats 2] [--quick]

Targets (batch-1 [1,1,28,28] FP32 requests, closed loop at concurrency 1/8/32/128):
  bare-unary / bare-stream   benchmarks/gateway/bare_server.py (grpc.aio + onnxruntime only)
  gw-infer / gw-stream       our ModelInfer / ModelStreamInfer (tritonclient.grpc.aio, unchanged)
  gw-session                 our SessionService stream (benchmarks/gateway/loadgen_session.py)
  triton-unary/-stream       nvidia-pytriton's Triton (dynamic batching), when .venv-triton exists
Also: gateway memory per idle open session (1,000 idle streams). Every server runs plaintext on
loopback (the gateway with --insecure) so the comparison is transport-equal.
Writes benchmarks/results/gateway.json.
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
RESULTS = ROOT / "benchmarks" / "results" / "gateway.json"


# The load generators repeat one input: with the gateway's result cache on they would measure
# cache hits, not inference. No metadata store either: the bare server and Triton keep none.
_NO_CACHE = {
    **os.environ,
    "AIML021_GATEWAY_CACHE__FULL_MODELS": "false",
    # One load generator is one device driving the gateway to capacity: no per-device rate limit.
    "AIML021_GATEWAY_LIMITS__REQUESTS_PER_S": "0",
}


def _start(
    cmd: list[str], port_file: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    for _ in range(600):
        if port_file.exists() and port_file.read_text().strip():
            return proc, json.loads(port_file.read_text())
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _loadgen(module: str, cfg: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-m", f"benchmarks.gateway.{module}", json.dumps(cfg)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _models() -> tuple[Path, str, str]:
    """Models directory, bundle name and a description of the model used.

    The reference bundle is committed (models/fmnist_branchy); benchmarks never import test
    fixtures, so there is no stand-in model when it is missing.
    """
    ref = ROOT / "models" / "fmnist_branchy"
    if not (ref / "manifest.json").exists():
        raise SystemExit(f"{ref}/manifest.json missing: restore models/ from git")
    return ROOT / "models", "fmnist_branchy", "models/fmnist_branchy (reference bundle, full model)"


def _idle_memory(models: Path, tmp: Path, sessions: int) -> dict[str, Any]:
    pf = tmp / "idle_ports.json"
    proc, ports = _start(
        [PY, "-m", "cloud", "serve", "--models", str(models), "--port", "0", "--insecure",
         "--metrics-port", "0", "--port-file", str(pf), "--metadata-url", "none"], pf, env=_NO_CACHE)  # fmt: skip
    try:
        url = f"127.0.0.1:{ports['port']}"
        client = subprocess.Popen(
            [PY, "-m", "benchmarks.gateway.idle_sessions", json.dumps({"url": url, "sessions": 20, "channels": 10})],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert client.stdout and client.stdin
        client.stdout.readline()  # warm-up: 20 sessions (connections, code paths)
        time.sleep(1.0)
        before = _rss_kb(proc.pid)
        client2 = subprocess.Popen(
            [PY, "-m", "benchmarks.gateway.idle_sessions", json.dumps({"url": url, "sessions": sessions, "channels": 10})],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert client2.stdout and client2.stdin
        opened = json.loads(client2.stdout.readline())["opened"]
        time.sleep(2.0)
        after = _rss_kb(proc.pid)
        for c in (client, client2):
            c.stdin.write("\n")  # type: ignore[union-attr]
            c.stdin.flush()  # type: ignore[union-attr]
            c.wait(timeout=30)
        return {
            "sessions": opened,
            "rss_before_kb": before,
            "rss_after_kb": after,
            "kb_per_session": (after - before) / max(1, opened),
        }
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description="gateway benchmark (A B A B)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    ap.add_argument("--idle-sessions", type=int, default=1000)
    ap.add_argument("--no-triton", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="aiml021-gwbench-"))
    models, bundle, model_desc = _models()
    from common.bundle import load_bundle

    b = load_bundle(models / bundle)
    full_onnx = b.segment_path(b.manifest.full)
    version = b.manifest.version
    procs: list[subprocess.Popen[bytes]] = []
    targets: dict[str, tuple[str, dict[str, Any]]] = {}
    notes: list[str] = []
    triton = None
    try:
        pf = tmp / "bare.json"
        p, ports = _start([PY, "-m", "benchmarks.gateway.bare_server", "--model", str(full_onnx),
                           "--name", bundle, "--port-file", str(pf)], pf)  # fmt: skip
        procs.append(p)
        bare = {"url": f"127.0.0.1:{ports['port']}", "model": bundle}
        pf = tmp / "gw.json"
        p, ports = _start([PY, "-m", "cloud", "serve", "--models", str(models), "--port", "0",
                           "--metrics-port", "0", "--insecure", "--port-file", str(pf),
                           "--metadata-url", "none"], pf, env=_NO_CACHE)  # fmt: skip
        procs.append(p)
        gw = {"url": f"127.0.0.1:{ports['port']}", "model": bundle}
        targets["bare-unary"] = ("loadgen_triton", {**bare, "mode": "unary"})
        targets["bare-stream"] = ("loadgen_triton", {**bare, "mode": "stream"})
        targets["gw-infer"] = ("loadgen_triton", {**gw, "mode": "unary"})
        targets["gw-stream"] = ("loadgen_triton", {**gw, "mode": "stream"})
        targets["gw-session"] = ("loadgen_session", dict(gw))  # inline payloads: one frame
        targets["gw-session-2f"] = ("loadgen_session", {**gw, "inline": False})  # header + chunk
        if not args.no_triton:
            try:
                from cloud.backends.triton import triton_model_ref
                from cloud.core import specs_from_bundle
                from scripts.triton import TritonServer

                spec = next(s for s in specs_from_bundle(models / bundle, 64) if not s.cut_point)
                triton = TritonServer(models=[spec])
                triton.start()
                name, tver = triton_model_ref(spec.key)
                tr = {"url": triton.grpc_target, "model": name, "version": tver}
                targets["triton-unary"] = ("loadgen_triton", {**tr, "mode": "unary"})
                targets["triton-stream"] = ("loadgen_triton", {**tr, "mode": "stream"})
            except Exception as exc:  # report, do not fail the whole benchmark
                notes.append(f"Triton not benchmarked: {type(exc).__name__}: {exc}")
                triton = None

        runs: dict[str, dict[int, list[dict[str, Any]]]] = {t: {} for t in targets}
        for rep in range(args.repeats):
            for c in args.concurrency:
                for name, (module, cfg) in targets.items():  # A B A B: every target per round
                    r = _loadgen(
                        module,
                        {**cfg, "concurrency": c, "seconds": args.seconds, "warmup": args.warmup},
                    )
                    runs[name].setdefault(c, []).append(r)
                    print(f"rep {rep} c={c:<4} {name:<14} {r.get('throughput', 0):8.0f}/s "
                          f"p50 {r.get('p50_ms') or 0:6.2f} ms p99 {r.get('p99_ms') or 0:6.2f} ms {r.get('error', '')}",
                          flush=True)  # fmt: skip
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        if triton is not None:
            triton.stop()
    idle = _idle_memory(models, tmp, args.idle_sessions) if args.idle_sessions else None
    shutil.rmtree(tmp, ignore_errors=True)

    summary: dict[str, dict[str, Any]] = {}
    for name, by_c in runs.items():
        for c, rs in by_c.items():
            ok = [r for r in rs if "throughput" in r]
            if not ok:
                continue
            tps = [r["throughput"] for r in ok]
            summary.setdefault(name, {})[str(c)] = {
                "throughput_median": statistics.median(tps),
                "throughput_min": min(tps),
                "throughput_max": max(tps),
                "p50_ms_median": statistics.median(r["p50_ms"] for r in ok),
                "p99_ms_median": statistics.median(r["p99_ms"] for r in ok),
                "repeats": len(ok),
                **({"inline": ok[0]["inline"]} if "inline" in ok[0] else {}),
            }
    ratios: dict[str, dict[str, float]] = {}
    pairs = [("gw-session", "bare-stream"), ("gw-session", "gw-session-2f"), ("gw-stream", "bare-stream"), ("gw-infer", "bare-unary"),
             ("gw-session", "triton-unary"), ("gw-session", "triton-stream")]  # fmt: skip
    for a, base in pairs:
        for c in map(str, args.concurrency):
            if a in summary and base in summary and c in summary[a] and c in summary[base]:
                ratios.setdefault(f"{a}/{base}", {})[c] = (
                    summary[a][c]["throughput_median"] / summary[base][c]["throughput_median"]
                )
    import grpc
    import numpy
    import onnxruntime

    result = {
        "benchmark": "gateway",
        "model": model_desc,
        "model_version": version,
        "seconds_per_run": args.seconds,
        "warmup_s": args.warmup,
        "repeats": args.repeats,
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "grpcio": grpc.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": numpy.__version__,
            "loadavg_at_end": os.getloadavg(),
        },
        "summary": summary,
        "ratios_throughput": ratios,
        "idle_sessions": idle,
        "notes": notes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        f"\nmodel: {model_desc}; {args.repeats} repeats x {args.seconds}s per cell; medians [min-max]"
    )
    print(f"{'target':<14} {'conc':>5} {'inf/s':>8} {'range':>15} {'p50 ms':>8} {'p99 ms':>8}")
    for name, by_c in summary.items():
        for c, s in by_c.items():
            rng = f"{s['throughput_min']:.0f}-{s['throughput_max']:.0f}"
            print(f"{name:<14} {c:>5} {s['throughput_median']:8.0f} {rng:>15} "
                  f"{s['p50_ms_median']:8.2f} {s['p99_ms_median']:8.2f}")  # fmt: skip
    for k, v in ratios.items():
        print(f"{k:<28} " + "  ".join(f"c={c}: {r:.2f}" for c, r in v.items()))
    if idle:
        print(f"idle sessions: {idle['sessions']} -> {idle['kb_per_session']:.1f} KB each "
              f"(RSS {idle['rss_before_kb']} -> {idle['rss_after_kb']} KB)")  # fmt: skip
    for n in notes:
        print("note:", n)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
