"""Issue 13: the legitimate device's p99 under each attack of ``tests/adversarial``, as ratios
to its unloaded p99, repeated, next to a baseline configuration in the same run.

    python -m benchmarks.hostile --repeats 3 --baseline AIML021_GATEWAY_BATCHING__WORKERS=1

Each repeat runs the whole suite (``pytest tests/adversarial``: a real ``aiml021 serve`` child,
a legitimate probe device at 50 requests/s, every attack) once per configuration, alternating
(baseline, default, baseline, ...), and collects every attack's :class:`AttackReport` (the suite
appends them to a file named by ``AIML021_ATTACK_REPORTS``). Per attack and configuration: the
median and range over the repeats of the p99 ratio (under attack / unloaded), of the added
milliseconds, and of the RSS left after the attack; how many repeats met the issue's 2x.
Writes benchmarks/results/hostile.json and prints the table (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT = "default"
REPORTS_ENV = "AIML021_ATTACK_REPORTS"
"""Where the suite appends each attack's report (``tests/adversarial/_attack.py`` reads it)."""


def _env_pairs(items: list[str]) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--baseline wants NAME=VALUE, got {item!r}")
        pairs[key] = value
    return pairs


def run_suite(env: dict[str, str], select: str) -> tuple[int, list[dict[str, Any]], float]:
    """One run of the suite with ``env`` added: (pytest's exit code, the reports, seconds)."""
    with tempfile.TemporaryDirectory(prefix="aiml021-hostile-") as tmp:
        reports = Path(tmp) / "reports.jsonl"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/adversarial"]
        if select:
            cmd += ["-k", select]
        start = time.monotonic()
        done = subprocess.run(
            cmd, cwd=ROOT, env={**os.environ, **env, REPORTS_ENV: str(reports)},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        took = time.monotonic() - start
        if done.returncode != 0:
            print(done.stdout[-3000:], file=sys.stderr)
        lines = reports.read_text().splitlines() if reports.exists() else []
    return done.returncode, [json.loads(line) for line in lines], took


def _load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (configuration, attack): medians and ranges over the repeats."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        for r in run["reports"]:
            cells.setdefault((run["config"], r["name"]), []).append(r)
    rows = []
    for (config, name), reports in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        ratio = [r["attack_p99_ms"] / r["unloaded_p99_ms"] for r in reports]
        added = [r["attack_p99_ms"] - r["unloaded_p99_ms"] for r in reports]
        rss = [r["rss_after_mb"] - r["rss_before_mb"] for r in reports]
        rows.append(
            {
                "attack": name,
                "config": config,
                "repeats": len(reports),
                "unloaded_p99_ms": statistics.median(r["unloaded_p99_ms"] for r in reports),
                "attack_p99_ms": statistics.median(r["attack_p99_ms"] for r in reports),
                "ratio_median": statistics.median(ratio),
                "ratio_min": min(ratio),
                "ratio_max": max(ratio),
                "added_ms_median": statistics.median(added),
                "within_2x": sum(x <= 2.0 for x in ratio),
                "wrong_answers": sum(r["wrong"] for r in reports),
                "rss_left_mb_max": max(rss),
                "slowdown_median": statistics.median(r["slowdown"] for r in reports),
            }
        )
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = [
        "| attack | configuration | p99 unloaded → attack ms (median) | ratio median [min–max] "
        "| added ms | ≤ 2× | wrong | RSS left MB (max) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r['attack']} | {r['config']} | {r['unloaded_p99_ms']:.1f} → "
            f"{r['attack_p99_ms']:.1f} | {r['ratio_median']:.2f}× [{r['ratio_min']:.2f}–"
            f"{r['ratio_max']:.2f}] | {r['added_ms_median']:+.1f} | {r['within_2x']}/"
            f"{r['repeats']} | {r['wrong_answers']} | {r['rss_left_mb_max']:+.1f} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--baseline",
        nargs="*",
        default=[],
        metavar="NAME=VALUE",
        help="settings of the baseline configuration (empty: the default alone)",
    )
    ap.add_argument("-k", dest="select", default="", help="pytest -k expression (some attacks)")
    ap.add_argument("--out", type=Path, default=RESULTS / "hostile.json")
    args = ap.parse_args(argv)  # fmt: skip
    configs: list[tuple[str, dict[str, str]]] = [(DEFAULT, {})]
    if args.baseline:
        configs.insert(0, (" ".join(args.baseline), _env_pairs(args.baseline)))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs = []
    for repeat in range(args.repeats):
        for config, env in configs:
            load = _load_average()
            rc, reports, took = run_suite(env, args.select)
            runs.append({"config": config, "repeat": repeat, "pytest_rc": rc, "seconds": took,
                         "load_before": load, "load_after": _load_average(),
                         "reports": reports})  # fmt: skip
            print(f"repeat {repeat} [{config}]: pytest rc {rc}, {len(reports)} attacks, "
                  f"{took:.0f} s, load {load:.1f}", flush=True)  # fmt: skip
    rows = summarise(runs)
    doc = {
        "command": "python -m benchmarks.hostile " + " ".join(argv or sys.argv[1:]),
        "started": started,
        "cpus": os.cpu_count(),
        "summary": rows,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
