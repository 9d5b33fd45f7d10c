"""The offload mix over time in an OCR fleet run whose link changes mid-way (issue 16, US-003):
per frame, where its lines were answered (device, region, whole frame, deferred), by device
class, against the link's bandwidth.

    python -m benchmarks.ocr.timeseries benchmarks/results/ocr_fleet_drop.json \\
        --png docs/img/ocr_bandwidth_drop.png

Prints the mix before and after each change of the link and writes the PNG.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

COLOURS = {"edge": "#2e7d32", "region": "#1565c0", "frame": "#6a1b9a", "deferred": "#ef6c00",
           "replayed": "#00838f", "edge_fallback": "#c62828"}  # fmt: skip


def frames(cell: dict[str, Any]) -> list[dict[str, Any]]:
    """Every frame of the cell with its device's class and share of routes."""
    out = []
    for dev in cell["devices"]:
        cls = "phone" if dev["share"] >= 1 else "iot"
        for f in dev["frames"]:
            n = sum(f[f"route_{r}"] for r in COLOURS) or 1
            out.append({**f, "class": cls, "mix": {r: f[f"route_{r}"] / n for r in COLOURS}})
    return sorted(out, key=lambda f: f["arrival_s"])


def mix(rows: list[dict[str, Any]]) -> dict[str, Any]:
    lines = sum(f["lines"] for f in rows) or 1
    answered = {r: sum(f[f"route_{r}"] for f in rows) for r in COLOURS}
    total = sum(answered.values()) or 1
    return {
        "frames": len(rows),
        "frames_sent_whole": sum(f.get("decision", "").startswith("OFFLOAD") for f in rows),
        "routes": {r: round(v / total, 3) for r, v in answered.items() if v},
        "lines_exact": round(sum(f["exact"] for f in rows) / lines, 3),
        "bytes_per_frame": round(sum(f["bytes_up"] for f in rows) / max(len(rows), 1)),
        "emulated_p95_s": _p95([f.get("emulated_latency_s", 0.0) for f in rows]),
    }


def _p95(values: list[float]) -> float:
    import numpy as np

    return round(float(np.percentile(values, 95)), 2) if values else float("nan")


def phases(report: dict[str, Any], cell: dict[str, Any]) -> list[dict[str, Any]]:
    """The mix per class in each phase of the link schedule."""
    bounds = [0.0, *[float(t) for t, _ in report.get("link_schedule", [])], float("inf")]
    rows = frames(cell)
    out = []
    for lo, hi in itertools.pairwise(bounds):
        part = [f for f in rows if lo <= f["arrival_s"] < hi]
        mbit = {f["link_mbit"] for f in part}
        out.append({"from_s": lo, "to_s": hi, "link_mbit": sorted(mbit),
                    **{c: mix([f for f in part if f["class"] == c]) for c in ("phone", "iot")}})  # fmt: skip
    return out


def plot(report: dict[str, Any], cell: dict[str, Any], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = frames(cell)
    fig, axes = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for ax, cls in zip(axes, ("phone", "iot"), strict=True):
        part = [f for f in rows if f["class"] == cls]
        for f in part:
            bottom = 0.0
            for r, colour in COLOURS.items():
                h = f["mix"][r]
                if h:
                    ax.bar(f["arrival_s"], h, width=0.6, bottom=bottom, color=colour)
                    bottom += h
            if f.get("decision", "").startswith("OFFLOAD"):
                ax.text(f["arrival_s"], 1.02, "F", ha="center", fontsize=7, color=COLOURS["frame"])
        ax.set_ylim(0, 1.12)
        ax.set_ylabel(f"{cls}: share of lines")
        link = ax.twinx()
        t = [0.0]
        bw = [float(report["links"][cell["link"]]["bandwidth_mbit"])]
        for at, change in report.get("link_schedule", []):
            t += [float(at), float(at)]
            bw += [bw[-1], float(change.get("bandwidth_mbit", bw[-1]))]
        end = max((f["arrival_s"] for f in rows), default=0.0) + 2
        t.append(end)
        bw.append(bw[-1])
        link.step(t, bw, where="post", color="black", linewidth=1.5, label="uplink Mbit/s")
        link.set_yscale("log")
        link.set_ylabel("uplink Mbit/s (log)")
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=r) for r, c in COLOURS.items()]
    axes[0].legend(handles=handles, loc="lower left", fontsize=7, ncol=6)
    axes[0].set_title(title, fontsize=9)
    axes[1].set_xlabel("frame arrival, s (F: the decider sent the JPEG before v4 ran)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path)
    ap.add_argument("--png", type=Path, required=True)
    args = ap.parse_args()
    report = json.loads(args.report.read_text())
    cell = report["cells"][0]
    decider = report["policy"].get("decider") or "fixed rule"
    bw = report["links"][cell["link"]]["bandwidth_mbit"]
    changes = ", ".join(
        f"{c.get('bandwidth_mbit', '?')} Mbit/s at {t} s"
        for t, c in report.get("link_schedule", [])
    )
    title = f"OCR fleet, {decider} decider: {cell['link']} ({bw} Mbit/s), then {changes or '-'}"
    plot(report, cell, args.png, title)
    print(json.dumps(phases(report, cell), indent=1))
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
