"""What the gateway exports and what our Prometheus rules record, for checking that a PromQL
query names only series that exist."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cloud._metrics import GatewayMetrics

RULES_DIR = Path(__file__).resolve().parents[1] / "prometheus" / "rules"
"""deploy/prometheus/rules: the recording rules dashboards may also query."""

_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
}
# A metric name in PromQL: not part of a longer identifier, a label value or a recorded name
# with colons; function names and keywords are excluded by the caller's vocabulary.
_NAME = re.compile(r"(?<![\w:\"'])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:(\"'])")
_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring", "inf", "nan"}
)


@dataclass(frozen=True)
class ExportedMetric:
    """One metric family of the gateway's registry."""

    name: str
    """Family name (a counter's series add ``_total``)."""
    type: str
    """counter, gauge or histogram."""
    labels: tuple[str, ...]
    help: str

    @property
    def series(self) -> tuple[str, ...]:
        """The series names Prometheus scrapes for this family."""
        return tuple(self.name + s for s in _SUFFIXES[self.type])


def exported_metrics() -> list[ExportedMetric]:
    """Every metric family a gateway serves on its metrics port, from a fresh registry."""
    metrics = GatewayMetrics()
    out = []
    for attr in vars(metrics).values():
        name = getattr(attr, "_name", None)
        if name is None or getattr(attr, "_type", None) not in _SUFFIXES:
            continue
        out.append(
            ExportedMetric(
                name=name,
                type=attr._type,
                labels=tuple(attr._labelnames),
                help=attr._documentation,
            )
        )
    registered = {f.name for f in metrics.registry.collect()}
    assert {m.name for m in out} == registered, "GatewayMetrics attributes != its registry"
    return out


def exported_series() -> set[str]:
    """Series names a gateway's scrape can contain (``_total``, ``_bucket`` ... included)."""
    return {s for m in exported_metrics() for s in m.series}


def recorded_series(rules_dir: Path = RULES_DIR) -> set[str]:
    """Names recorded by the rule files in ``rules_dir``."""
    return {rule["record"] for rule in _rules(rules_dir) if "record" in rule}


def _rules(rules_dir: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(rules_dir.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


_FUNCTION_CALL = re.compile(r"\b([a-z_]+)\s*\(")


def promql_metric_names(expr: str) -> set[str]:
    """Metric (and recorded series) names a PromQL expression or Grafana variable query
    (``label_values(metric, label)``) selects. A small lexer, not a parser: it drops strings,
    label matchers, ranges and grouping lists, then keeps identifiers that are not function
    calls, keywords or Grafana variables."""
    text = _STRINGS.sub('""', expr)
    text = _MATCHERS.sub("{}", text)
    text = _RANGES.sub("[]", text)
    text = _LABEL_LISTS.sub(" ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    functions = set(_FUNCTION_CALL.findall(text))
    if text.lstrip().startswith("label_values("):
        text = re.sub(r",\s*\w+\s*\)\s*$", ")", text.strip())  # the label argument
    names = set()
    for m in _NAME.finditer(text):
        word = m.group(1)
        if word in functions or word.lower() in _KEYWORDS or re.fullmatch(r"[0-9.e+-]+", word):
            continue
        names.add(word)
    return names


__all__ = [
    "RULES_DIR",
    "ExportedMetric",
    "exported_metrics",
    "exported_series",
    "promql_metric_names",
    "recorded_series",
]
