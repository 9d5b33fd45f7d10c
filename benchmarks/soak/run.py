"""Soak and chaos run of the gateway (issue 13; not in CI).

    .venv/bin/python -m benchmarks.soak --duration 1800 --devices 20 --rate 100 \\
        --hostile 0.1 --chaos-interval 120 --window 300

Starts its own Redis and PostgreSQL (never the machine's shared ones, which it would kill; on
``--base-port`` +2 and +1, or free ports) and ``aiml021 serve`` (mTLS, idempotency in Redis,
metadata in PostgreSQL, result cache off so every answer is computed; a restart that fails is
retried every 5 s and recorded), then device processes (their records written as each request
ends, so a run cut short keeps them): honest devices send ``--rate`` requests/s in all (half of
the capacity measured just before in the same configuration and conditions: ``python -m
benchmarks.soak.memory --duration 60 --warmup 10 --rate 3000 --devices 48 --hostile 0``, whose
answers per second are the capacity; on a shared machine it moves with the load), each request
with its own idempotency key and retried over reconnects until answered; ``--hostile`` of the
devices attack instead (issue 13's attacks, in turn). Every ``--chaos-interval`` seconds one of: the gateway
killed -9 and restarted, Redis killed -9 and restarted (its keys are lost), PostgreSQL stopped
(immediate) and started 5 s later. Reports per ``--window``: requests, answered, lost (never
answered by the end), duplicated computations (a key computed twice: seen by devices as two
uncached answers, and as two computed rows in PostgreSQL), p50/p99 from first send to answer,
gateway RSS, the machine's load average; over the run: the RSS growth and slope of each gateway
incarnation after its first ``--warmup`` seconds. Prints a table and writes
``benchmarks/results/soak.json``.
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
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.soak._services import ROOT, Gateway, loadavg, services
from common.auth import write_dev_pki

RESULTS = ROOT / "benchmarks" / "results"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def _slope(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t, rss) in MB per minute."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    return 60 * sum((t - mt) * (r - mr) for t, r in samples) / var if var else None


def _restart(gw: Gateway, events: list[dict[str, Any]], at: float) -> None:
    """Start the gateway again; a start that fails (a broken checkout, a port still taken) is
    recorded and retried every 5 s, as a supervisor would, instead of ending the run."""
    while True:
        try:
            gw.start()
            return
        except RuntimeError as exc:
            events.append({"t_s": round(at, 1), "fault": "gateway_start_failed", "error": str(exc)})
            print(f"gateway did not start ({exc}); retrying in 5 s", flush=True)
            time.sleep(5)


def _db_duplicates(url: str) -> dict[str, int]:
    import psycopg

    # Keys are a device's own, so a key counts per device. A gateway without pseudonyms stores
    # DLP-redacted keys (``dev-026-1234`` as ``dev-[PHONE]``), which no longer tell computations
    # apart and are only counted; with pseudonyms each key is its own ``idk_…``.
    with psycopg.connect(url, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT device_id, idempotency_key, count(*) FROM requests WHERE status = 'OK' AND "
            "route = 'cloud' AND idempotency_key <> '' AND idempotency_key NOT LIKE '%[%' "
            "GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
        redacted = conn.execute(
            "SELECT count(*) FROM requests WHERE idempotency_key LIKE '%[%'"
        ).fetchone()
        total = conn.execute("SELECT count(*) FROM requests").fetchone()
    return {
        "keys_computed_twice": len(rows),
        "rows": int(total[0]) if total else 0,
        "keys_redacted_not_checked": int(redacted[0]) if redacted else 0,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=1800.0, help="seconds of load")
    ap.add_argument("--devices", type=int, default=20, help="devices in all")
    ap.add_argument("--processes", type=int, default=4, help="device processes")
    ap.add_argument("--rate", type=float, default=100.0, help="honest requests/s in all")
    ap.add_argument("--hostile", type=float, default=0.1, help="fraction of hostile devices")
    ap.add_argument("--chaos-interval", type=float, default=120.0, help="seconds between faults")
    ap.add_argument("--window", type=float, default=300.0, help="report window, seconds")
    ap.add_argument(
        "--warmup",
        type=float,
        default=60.0,
        help="seconds of each gateway incarnation left out of its RSS growth",
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="device's wait for one answer")
    ap.add_argument("--env", action="append", default=[], help="KEY=VALUE for the gateway")
    ap.add_argument("--base-port", type=int, default=None,
                    help="gateway on this port, its own PostgreSQL on +1, Redis on +2 (free ports "
                         "if unset); never the machine's shared services")  # fmt: skip
    ap.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    a = ap.parse_args(argv)
    # ``kill PID`` (and SIGINT, which a background job ignores) still stops what the run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = Path(tempfile.mkdtemp(prefix="aiml021-soak-"))
    n_hostile = max(1, round(a.devices * a.hostile)) if a.hostile > 0 else 0
    names = [f"dev-{i:03d}" for i in range(a.devices)]
    hostile, honest = names[:n_hostile], names[n_hostile:]
    pki = tmp / "pki"
    write_dev_pki(pki, names)
    # Its own temporary directory: the postgres user cannot enter ``tmp`` (mode 0700, root's).
    redis, pg, gw_port = services(a.base_port, "aiml021-soak-pg-")
    redis.start()
    try:
        pg.init()
        pg.start()
    except BaseException:
        redis.kill()
        raise
    gw = Gateway(tmp, pki, {
        "AIML021_GATEWAY_STORES__BACKEND": "redis",
        "AIML021_GATEWAY_STORES__REDIS_URL": redis.url,
        "AIML021_GATEWAY_STORES__METADATA_URL": pg.url,
        "AIML021_GATEWAY_CACHE__FULL_MODELS": "false",
        # A claim left by a gateway killed -9 while computing expires soon, so retries proceed.
        "AIML021_GATEWAY_IDEMPOTENCY__PENDING_TTL_S": "5",
        "AIML021_GATEWAY_IDEMPOTENCY__WAIT_S": "10",
        **dict(kv.split("=", 1) for kv in a.env),
    }, port=gw_port)  # fmt: skip
    try:
        gw.start()
    except BaseException:
        redis.kill()
        pg.stop()
        raise
    t0 = time.time()
    end = t0 + a.duration
    grace = 3 * a.timeout + 10
    procs = []
    for i in range(a.processes):
        cfg = {"address": f"127.0.0.1:{gw.port}", "pki": str(pki), "end": end,
               "grace_s": grace, "timeout_s": a.timeout,
               "rate_per_device": a.rate / max(1, len(honest)),
               "honest": honest[i :: a.processes], "hostile": hostile[i :: a.processes],
               "out": str(tmp / f"devices-{i}.jsonl")}  # fmt: skip
        procs.append(subprocess.Popen([sys.executable, "-m", "benchmarks.soak.device",
                                       json.dumps(cfg)], cwd=ROOT))  # fmt: skip
    faults = ["gateway", "redis", "postgres"]
    events: list[dict[str, Any]] = []
    rss: list[tuple[int, float, float]] = []  # incarnation, t, MB
    loads: list[tuple[float, float]] = []  # t, 1-minute load average of the machine
    next_fault = t0 + a.chaos_interval
    k = 0
    try:
        while time.time() < end:
            time.sleep(1.0)
            rss.append((gw.incarnation, time.time() - t0, gw.rss_mb()))
            loads.append((time.time() - t0, os.getloadavg()[0]))
            if time.time() >= next_fault and time.time() < end - 10:
                fault = faults[k % len(faults)]
                k += 1
                at = time.time() - t0
                if fault == "gateway":
                    gw.kill()
                    _restart(gw, events, at)
                elif fault == "redis":
                    redis.kill()
                    time.sleep(2)
                    redis.start()
                else:
                    pg.stop()
                    time.sleep(5)
                    pg.start()
                events.append({"t_s": round(at, 1), "fault": fault})
                print(f"[{at:7.1f} s] chaos: {fault} killed and restarted", flush=True)
                next_fault += a.chaos_interval
        for p in procs:
            p.wait(timeout=grace + 60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        gw.stop()  # SIGTERM: the metadata writer flushes
        try:
            db = _db_duplicates(pg.url)
        except Exception as exc:  # report what we have
            db = {"error": str(exc)}  # type: ignore[dict-item]
        pg.stop()
        redis.kill()

    recs = [json.loads(x) for i in range(a.processes)
            for x in (tmp / f"devices-{i}.jsonl").read_text().splitlines()]  # fmt: skip
    reqs = [r for r in recs if "key" in r]
    attacks = Counter(r["attack"] for r in recs if "attack" in r)
    computed = Counter(r["key"] for r in reqs if r["status"] == "OK" and r["cached"] is False)
    windows = []
    w = 0.0
    while w < a.duration:
        ws = [r for r in reqs if w <= r["sent"] - t0 < w + a.window]
        lat = [r["answered"] - r["sent"] for r in ws if "answered" in r]
        mem = [m for _, t, m in rss if w <= t < w + a.window and m > 0]
        load = [x for t, x in loads if w <= t < w + a.window]
        windows.append({
            "from_s": w, "requests": len(ws), "ok": sum(r["status"] == "OK" for r in ws),
            "errors": sum(r["status"].startswith("ERROR") for r in ws),
            "lost": sum(r["status"] == "LOST" for r in ws),
            "retried": sum(r["attempts"] > 1 for r in ws),
            "p50_ms": None if not lat else round(1e3 * (_pct(lat, 0.5) or 0), 1),
            "p99_ms": None if not lat else round(1e3 * (_pct(lat, 0.99) or 0), 1),
            "rss_mb": round(sum(mem) / len(mem), 1) if mem else None,
            "load1": round(sum(load) / len(load), 1) if load else None,
        })  # fmt: skip
        w += a.window
    incarnations = sorted({i for i, _, _ in rss})
    slopes = {}
    for inc in incarnations:
        pts = [(t, m) for i, t, m in rss if i == inc and m > 0]
        # After warm-up: the first minute of the incarnation, or its first tenth if shorter.
        warm = [(t, m) for t, m in pts if t - pts[0][0] >= min(a.warmup, len(pts) / 10)]
        if len(warm) > 10:
            s = _slope(warm)
            slopes[inc] = {"seconds": round(warm[-1][0] - warm[0][0]),
                           "first_mb": round(warm[0][1], 1), "last_mb": round(warm[-1][1], 1),
                           "growth_pct": round(100 * (warm[-1][1] / warm[0][1] - 1), 1),
                           "slope_mb_per_min": None if s is None else round(s, 3)}  # fmt: skip
    report = {
        "command": "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "duration_s": a.duration, "devices": a.devices, "hostile": hostile, "rate": a.rate,
        "env": a.env, "load_average": loadavg(),
        "requests": len(reqs), "ok": sum(r["status"] == "OK" for r in reqs),
        "lost": sum(r["status"] == "LOST" for r in reqs),
        "errors": Counter(r["status"] for r in reqs if r["status"].startswith("ERROR")),
        "duplicated_computations_seen_by_devices": sum(1 for c in computed.values() if c > 1),
        "duplicated_computations_in_postgres": db,
        "chaos": events, "attacks": attacks, "windows": windows, "rss_by_gateway_incarnation": slopes,
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(report, indent=1, default=dict))
    print(f"\n{'window':>8} {'requests':>9} {'ok':>6} {'errors':>6} {'lost':>5} {'retried':>7} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>7}")  # fmt: skip
    for x in windows:
        print(f"{x['from_s']:>7.0f}s {x['requests']:>9} {x['ok']:>6} {x['errors']:>6} {x['lost']:>5} "
              f"{x['retried']:>7} {x['p50_ms']!s:>8} {x['p99_ms']!s:>8} {x['rss_mb']!s:>7}")  # fmt: skip
    print(f"lost {report['lost']} of {report['requests']}; duplicated computations: devices "
          f"{report['duplicated_computations_seen_by_devices']}, postgres {db}; chaos {len(events)} "
          f"faults; attacks {dict(attacks)}")  # fmt: skip
    for inc, per_inc in slopes.items():
        print(f"gateway #{inc}: {per_inc}")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
