"""Grafana dashboards as code (grafana-foundation-sdk). ``python -m deploy.grafana`` writes
them under deploy/grafana/dashboards/; ``--check`` fails when the committed JSON differs.

Rendering refuses a dashboard whose queries name a series that neither the gateway exports nor
our Prometheus rules record."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from ._devices import devices, policy
from ._exporter import (
    ExportedMetric,
    exported_metrics,
    exported_series,
    promql_metric_names,
    recorded_series,
)
from ._fleet import cost, fleet
from ._gateway import cache, gateway

DASHBOARDS = {
    "gateway": gateway,
    "cache": cache,
    "devices": devices,
    "policy": policy,
    "fleet": fleet,
    "cost": cost,
}
"""File stem (``aiml021-<stem>.json``) -> the function that builds that dashboard."""

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
"""Where the generated JSON is committed."""


def queries(model: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable of a dashboard's JSON."""
    for var in model.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]
            yield f"variable {var['name']}", q if isinstance(q, str) else q.get("query", "")

    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(model.get("panels", [])):
        for t in p.get("targets", []):
            yield f"panel {p.get('title')!r} {t.get('refId')}", t["expr"]


def unknown_series(model: dict[str, Any]) -> list[str]:
    """Queries of ``model`` naming a series that is neither exported nor recorded."""
    known = exported_series() | recorded_series()
    bad = []
    for where, expr in queries(model):
        missing = promql_metric_names(expr) - known
        if missing:
            bad.append(f"{where}: {sorted(missing)} in {expr}")
    return bad


def render(board: Dashboard) -> str:
    """The dashboard as committed JSON (sorted keys, 2-space indent, final newline)."""
    text = JSONEncoder(sort_keys=True, indent=2).encode(board.build()) + "\n"
    bad = unknown_series(json.loads(text))
    if bad:
        raise ValueError("queries name series nothing exports:\n" + "\n".join(bad))
    return text


__all__ = [
    "DASHBOARDS",
    "OUT_DIR",
    "ExportedMetric",
    "exported_metrics",
    "exported_series",
    "promql_metric_names",
    "queries",
    "recorded_series",
    "render",
    "unknown_series",
]
