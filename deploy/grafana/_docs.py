"""The generated tables of docs/observability.md: metrics (from the gateway's registry), recorded
series and alerts (from deploy/prometheus/rules), dashboards (from their builders). Each table sits
between ``<!-- NAME: generated ... -->`` and ``<!-- /NAME -->``; a test keeps them in sync."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders.dashboard import Dashboard
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from ._exporter import RULES_DIR, exported_metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "observability.md"


def _cell(text: str) -> str:
    """One table cell: one line, pipes escaped, alert templates' ``{{ $labels.x }}`` as *x*."""
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", r"*\1*", text)
    return " ".join(text.split()).replace("|", "\\|")


def metrics_table() -> str:
    rows = ["| series | type | labels | meaning |", "|---|---|---|---|"]
    for m in exported_metrics():
        series = ", ".join(f"`{s}`" for s in m.series)
        labels = ", ".join(f"`{label}`" for label in m.labels) or "—"
        rows.append(f"| {series} | {m.type} | {labels} | {_cell(m.help)} |")
    return "\n".join(rows)


def _rules(rules_dir: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in sorted(rules_dir.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                yield path.name, rule


def recorded_table(rules_dir: Path = RULES_DIR) -> str:
    rows = ["| series | file | expression |", "|---|---|---|"]
    for file, rule in _rules(rules_dir):
        if "record" in rule:
            rows.append(f"| `{rule['record']}` | {file} | `{_cell(rule['expr'])}` |")
    return "\n".join(rows)


def alerts_table(rules_dir: Path = RULES_DIR) -> str:
    rows = ["| alert | severity | for | fires when |", "|---|---|---|---|"]
    for _file, rule in _rules(rules_dir):
        if "alert" in rule:
            rows.append(
                f"| `{rule['alert']}` | {rule['labels']['severity']} | {rule.get('for', '0s')} "
                f"| {_cell(rule['annotations']['description'])} |"
            )
    return "\n".join(rows)


def dashboards_table(boards: Mapping[str, Callable[[], Dashboard]]) -> str:
    rows = ["| dashboard (uid) | file | drill-down | panels |", "|---|---|---|---|"]
    for stem, build in boards.items():
        model = json.loads(JSONEncoder().encode(build().build()))
        drill = [f"`${v['name']}`" for v in model["templating"]["list"] if v["type"] == "query"]
        panels = [p["title"] for p in model["panels"] if p["type"] != "row"]
        rows.append(
            f"| {model['title']} (`{model['uid']}`) | `deploy/grafana/dashboards/aiml021-{stem}.json`"
            f" | {', '.join(drill)} | {_cell('; '.join(panels))} |"
        )
    return "\n".join(rows)


def tables(boards: Mapping[str, Callable[[], Dashboard]]) -> dict[str, str]:
    """Block name -> generated table."""
    return {
        "metrics-table": metrics_table(),
        "recorded-table": recorded_table(),
        "alerts-table": alerts_table(),
        "dashboards-table": dashboards_table(boards),
    }


def render_doc(text: str, blocks: Mapping[str, str]) -> str:
    """``text`` with each generated block replaced by its current table."""
    for name, table in blocks.items():
        m = re.search(rf"(<!-- {name}: [^\n]*-->\n).*?(<!-- /{name} -->)", text, re.S)
        if m is None:
            raise ValueError(f"{DOC.name} has no <!-- {name}: ... --> block")
        text = text[: m.start()] + m.group(1) + table + "\n" + m.group(2) + text[m.end() :]
    return text


__all__ = [
    "DOC",
    "alerts_table",
    "dashboards_table",
    "metrics_table",
    "recorded_table",
    "render_doc",
    "tables",
]
