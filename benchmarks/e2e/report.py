"""Per-request outcomes -> KPIs, a terminal table, JSON and PNG plots."""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Cloud price table used for "cost per 1,000 requests": a GPU-less cloud instance billed per
# compute second plus egress-free ingress per GB (the bytes the cloud must receive). Stated in
# every report so the number can be recomputed with another table.
PRICE_PER_COMPUTE_S = 0.000_048  # USD per vCPU-second (≈ 0.17 USD per vCPU-hour)
PRICE_PER_GB_IN = 0.01  # USD per GB received by the cloud (load balancer/data processing)


@dataclass
class Outcome:
    """What happened to one request."""

    index: int
    label: int
    predicted: int
    route: str  # edge | cloud | edge_fallback | cache | deferred | error
    latency_s: float
    bytes_up: int = 0
    bytes_down: int = 0
    cloud_compute_s: float = 0.0
    exit_index: int = -1
    error: str = ""


@dataclass
class Kpis:
    system: str
    requests: int
    accuracy: float
    local_exit_rate: float
    offload_rate: float
    fallback_rate: float
    error_rate: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    bytes_per_request: float
    cloud_compute_ms_per_1k: float
    cost_per_1k_usd: float
    routes: dict[str, int] = field(default_factory=dict)


def kpis(system: str, outcomes: Sequence[Outcome]) -> Kpis:
    n = len(outcomes)
    if n == 0:
        raise ValueError("no outcomes")
    lat = np.array([o.latency_s for o in outcomes]) * 1000
    routes = Counter(o.route for o in outcomes)
    up = sum(o.bytes_up for o in outcomes)
    compute = sum(o.cloud_compute_s for o in outcomes)
    cost = compute * PRICE_PER_COMPUTE_S + up / 1e9 * PRICE_PER_GB_IN
    return Kpis(
        system=system,
        requests=n,
        accuracy=sum(o.predicted == o.label for o in outcomes) / n,
        local_exit_rate=routes["edge"] / n,
        offload_rate=(routes["cloud"] + routes["edge_fallback"]) / n,
        fallback_rate=routes["edge_fallback"] / n,
        error_rate=routes["error"] / n,
        p50_ms=float(np.percentile(lat, 50)),
        p95_ms=float(np.percentile(lat, 95)),
        p99_ms=float(np.percentile(lat, 99)),
        mean_ms=float(lat.mean()),
        bytes_per_request=(up + sum(o.bytes_down for o in outcomes)) / n,
        cloud_compute_ms_per_1k=compute * 1000 / n * 1000,
        cost_per_1k_usd=cost / n * 1000,
        routes=dict(routes),
    )


COLUMNS = [
    ("system", "{}"),
    ("accuracy", "{:.2%}"),
    ("local_exit_rate", "{:.1%}"),
    ("offload_rate", "{:.1%}"),
    ("fallback_rate", "{:.1%}"),
    ("p50_ms", "{:.2f}"),
    ("p95_ms", "{:.2f}"),
    ("p99_ms", "{:.2f}"),
    ("bytes_per_request", "{:.0f}"),
    ("cloud_compute_ms_per_1k", "{:.1f}"),
    ("cost_per_1k_usd", "{:.6f}"),
]


def table(rows: Sequence[Kpis], title: str = "") -> str:
    cells = [[name for name, _ in COLUMNS]]
    for row in rows:
        d = asdict(row)
        cells.append([fmt.format(d[name]) for name, fmt in COLUMNS])
    widths = [max(len(r[i]) for r in cells) for i in range(len(COLUMNS))]
    lines = [title] if title else []
    for j, r in enumerate(cells):
        lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    import onnxruntime

    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": onnxruntime.__version__,
        "price_table": {"usd_per_compute_s": PRICE_PER_COMPUTE_S, "usd_per_gb_in": PRICE_PER_GB_IN},
    }


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_default) + "\n")


def _default(obj: object) -> Any:
    if isinstance(obj, Kpis | Outcome):
        return asdict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(type(obj))


def plot(outcomes: Sequence[Outcome], out_dir: Path, prefix: str = "demo") -> list[Path]:
    """Latency CDF per route and bytes per request, as PNGs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for route in sorted({o.route for o in outcomes}):
        lat = np.sort([o.latency_s * 1000 for o in outcomes if o.route == route])
        ax.plot(lat, np.arange(1, len(lat) + 1) / len(lat), label=f"{route} (n={len(lat)})")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("Latency CDF per route")
    ax.grid(True, alpha=0.3)
    ax.legend()
    paths.append(out_dir / f"{prefix}_latency_cdf.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    per_route: dict[str, list[int]] = {}
    for o in outcomes:
        per_route.setdefault(o.route, []).append(o.bytes_up + o.bytes_down)
    names = sorted(per_route)
    ax.bar(names, [float(np.mean(per_route[n])) for n in names])
    ax.set_ylabel("bytes per request (up + down)")
    ax.set_title("Bytes on the wire per request, by route")
    paths.append(out_dir / f"{prefix}_bytes.png")
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    return paths
