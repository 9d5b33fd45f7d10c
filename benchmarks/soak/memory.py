"""The gateway's RSS under steady load: does it plateau, and what does Python keep (issue 13;
not in CI).

    .venv/bin/python -m benchmarks.soak.memory --duration 600 --rate 100 --devices 20 \\
        --hostile 0.1 [--env MALLOC_ARENA_MAX=2] [--trace 60] --out benchmarks/results/X.json

The services and devices of :mod:`benchmarks.soak` (mTLS, idempotency in Redis, metadata in
PostgreSQL, result cache off) without chaos: one gateway incarnation for the whole run, its RSS
sampled every second. Reports the least-squares RSS slope after ``--warmup`` seconds, for the
whole run and for each half (a plateau shows as a second-half slope near 0 after a first-half
rise). ``--env`` passes allocator settings (``MALLOC_ARENA_MAX``...) to the gateway. With
``--trace S`` the gateway runs under tracemalloc (:mod:`benchmarks.soak.traced`, several times
slower) and a snapshot is taken every S seconds; the report lists the biggest growths between the
first snapshot after warm-up and the last, by allocation traceback. Prints a summary and writes
JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.soak._services import ROOT, Gateway, services
from benchmarks.soak.run import RESULTS, _slope
from common.auth import write_dev_pki


def _growth(first: Path, last: Path, top: int) -> list[dict[str, Any]]:
    """The ``top`` biggest growths from ``first`` to ``last`` snapshot, by traceback."""
    ignore = [
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, "<unknown>"),
    ]
    a = tracemalloc.Snapshot.load(str(first)).filter_traces(ignore)
    b = tracemalloc.Snapshot.load(str(last)).filter_traces(ignore)
    out = []
    for stat in b.compare_to(a, "traceback")[:top]:
        out.append({
            "size_diff_kb": round(stat.size_diff / 1024, 1), "count_diff": stat.count_diff,
            "size_kb": round(stat.size / 1024, 1),
            "traceback": [f"{f.filename.replace(str(ROOT) + '/', '')}:{f.lineno}"
                          for f in list(stat.traceback)[-6:]],
        })  # fmt: skip
    return out


def _mappings_mb(pid: int) -> dict[str, float]:
    """The process's resident memory by kind of mapping (/proc/PID/smaps): the brk heap, anonymous
    mappings (glibc's per-thread arenas, large allocations, Python's arenas) and files."""
    kinds = {"heap": 0, "anon": 0, "files": 0, "stack": 0}
    kind = "anon"
    try:
        text = Path(f"/proc/{pid}/smaps").read_text()
    except OSError:
        return {}
    for line in text.splitlines():
        head = line.split()
        if not head:
            continue
        if "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            name = head[5] if len(head) > 5 else ""
            kind = ("heap" if name == "[heap]" else "stack" if name.startswith("[stack")
                    else "files" if name.startswith("/") else "anon")  # fmt: skip
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1])
    return {k: round(v / 1024, 1) for k, v in kinds.items()}


def _traced_mb(path: Path) -> float:
    snap = tracemalloc.Snapshot.load(str(path))
    return sum(s.size for s in snap.statistics("filename")) / 2**20


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the slope")
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--processes", type=int, default=4, help="device processes")
    ap.add_argument("--rate", type=float, default=100.0, help="honest requests/s in all")
    ap.add_argument("--hostile", type=float, default=0.1, help="fraction of hostile devices")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway")
    ap.add_argument("--trace", type=float, default=0.0, help="tracemalloc snapshot every S s")
    ap.add_argument(
        "--base-port",
        type=int,
        default=None,
        help="gateway on this port, its own PostgreSQL on +1, Redis on +2",
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "soak_memory.json")
    a = ap.parse_args(argv)
    # ``kill PID`` (and SIGINT, which a background job ignores) still stops what the run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="aiml021-memory-"))
    n_hostile = max(1, round(a.devices * a.hostile)) if a.hostile > 0 else 0
    names = [f"dev-{i:03d}" for i in range(a.devices)]
    hostile, honest = names[:n_hostile], names[n_hostile:]
    pki = tmp / "pki"
    write_dev_pki(pki, names)
    redis, pg, gw_port = services(a.base_port, "aiml021-memory-pg-")
    env = {
        "AIML021_GATEWAY_STORES__BACKEND": "redis",
        "AIML021_GATEWAY_STORES__REDIS_URL": redis.url,
        "AIML021_GATEWAY_STORES__METADATA_URL": pg.url,
        "AIML021_GATEWAY_CACHE__FULL_MODELS": "false",
        **dict(kv.split("=", 1) for kv in a.env),
    }
    snapshots = tmp / "snapshots"
    launcher: tuple[str, ...] = ("-m", "cloud")
    if a.trace > 0:
        env["AIML021_TRACEMALLOC_DIR"] = str(snapshots)
        launcher = ("-m", "benchmarks.soak.traced")
    redis.start()
    pg.init()
    pg.start()
    gw = Gateway(tmp, pki, env, launcher=launcher, port=gw_port)
    procs: list[subprocess.Popen[bytes]] = []
    rss: list[tuple[float, float]] = []
    loads: list[float] = []  # the machine's 1-minute load average, every second
    snap_times: list[float] = []
    mappings: dict[str, dict[str, float]] = {}
    try:
        gw.start()
        t0 = time.time()
        end = t0 + a.duration
        for i in range(a.processes):
            cfg = {"address": f"127.0.0.1:{gw.port}", "pki": str(pki), "end": end,
                   "grace_s": 10, "timeout_s": 5.0,
                   "rate_per_device": a.rate / max(1, len(honest)),
                   "honest": honest[i :: a.processes], "hostile": hostile[i :: a.processes],
                   "out": str(tmp / f"devices-{i}.jsonl")}  # fmt: skip
            procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.soak.device",
                                           json.dumps(cfg)], cwd=ROOT))  # fmt: skip
        next_snap = t0 + a.warmup if a.trace > 0 else float("inf")
        while time.time() < end:
            time.sleep(1.0)
            rss.append((time.time() - t0, gw.rss_mb()))
            loads.append(os.getloadavg()[0])
            if gw.proc is not None and "after_warmup" not in mappings and rss[-1][0] >= a.warmup:
                mappings["after_warmup"] = _mappings_mb(gw.proc.pid)
            if time.time() >= next_snap and gw.proc is not None:
                gw.proc.send_signal(signal.SIGUSR1)
                snap_times.append(time.time() - t0)
                next_snap += a.trace
        if gw.proc is not None:
            mappings["end"] = _mappings_mb(gw.proc.pid)
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        try:
            gw.stop()
            pg.stop()
        finally:
            redis.kill()

    recs = [json.loads(x) for i in range(a.processes)
            for x in (tmp / f"devices-{i}.jsonl").read_text().splitlines()]  # fmt: skip
    reqs = [r for r in recs if "key" in r]
    steady = [(t, m) for t, m in rss if t >= a.warmup and m > 0]
    half = len(steady) // 2
    report: dict[str, Any] = {
        "command": "python -m benchmarks.soak.memory "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "duration_s": a.duration, "warmup_s": a.warmup, "rate": a.rate, "devices": a.devices,
        "hostile": hostile, "env": a.env, "traced": a.trace > 0,
        "requests": len(reqs), "ok": sum(r["status"] == "OK" for r in reqs),
        "rss_mb": {"start": rss[0][1] if rss else None,
                   "after_warmup": steady[0][1] if steady else None,
                   "end": steady[-1][1] if steady else None,
                   "max": max(m for _, m in steady) if steady else None},
        "growth_after_warmup_pct": round(100 * (steady[-1][1] / steady[0][1] - 1), 2)
        if steady else None,
        "load1": {"mean": round(sum(loads) / len(loads), 1) if loads else None,
                  "max": max(loads) if loads else None},
        "slope_mb_per_min": {"steady": _slope(steady), "first_half": _slope(steady[:half]),
                             "second_half": _slope(steady[half:])},
        "rss_by_mapping_mb": mappings,
        "rss_series": [(round(t), round(m, 1)) for t, m in rss[::10]],
    }  # fmt: skip
    snaps = sorted(snapshots.glob("snapshot-*.pickle")) if a.trace > 0 else []
    if len(snaps) >= 2:
        report["tracemalloc"] = {
            "snapshot_times_s": [round(t) for t in snap_times],
            "traced_mb": [round(_traced_mb(s), 2) for s in snaps],
            "growth_first_to_last": _growth(snaps[0], snaps[-1], 15),
        }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1))
    s = report["slope_mb_per_min"]
    print(f"{report['ok']} of {report['requests']} answered; RSS {report['rss_mb']}")
    print(f"RSS by mapping (MB): {mappings}")
    print(
        "RSS slope MB/min after warm-up: "
        + ", ".join(f"{k} {v:+.3f}" if v is not None else f"{k} -" for k, v in s.items())
    )
    if "tracemalloc" in report:
        tm = report["tracemalloc"]
        print(f"traced Python heap MB per snapshot: {tm['traced_mb']}")
        for g in tm["growth_first_to_last"]:
            print(
                f"{g['size_diff_kb']:+9.1f} KB {g['count_diff']:+7d}  {' <- '.join(reversed(g['traceback']))}"
            )
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
