"""Small constructors over grafana-foundation-sdk builders, so every dashboard queries the same
data source variable, numbers its panels and names its queries the same way."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.cog import variants
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    VariableRefresh,
    VariableSort,
)

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
"""Every query goes to the data source the dashboard's ``datasource`` variable picks."""

Query = tuple[str, str]
"""(PromQL, legend format)."""

RATE = "[$__rate_interval]"
"""The range of every rate(): Grafana's interval that always spans enough scrapes."""


class Layout:
    """Panel ids in build order (Grafana wants them unique within a dashboard)."""

    def __init__(self) -> None:
        self._ids: Iterator[int] = itertools.count(1)

    def next_id(self) -> int:
        return next(self._ids)


def dashboard(uid: str, title: str, description: str, tags: list[str]) -> Dashboard:
    """A dashboard with our defaults: last 6 hours, 30 s refresh, shared crosshair, and the
    Prometheus data source variable every query uses."""
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["aiml021", *tags])
        .time("now-6h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )


def label_variable(name: str, label: str, metric: str) -> QueryVariable:
    """A multi-value drill-down over the values ``name`` takes on ``metric`` (All = any)."""
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def row(layout: Layout, title: str) -> Row:
    return Row(title).id(layout.next_id())


def _targets(queries: tuple[Query, ...]) -> list[Builder[variants.Dataquery]]:
    return [
        Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
        for i, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    layout: Layout,
    title: str,
    description: str,
    unit: str,
    *queries: Query,
    stack_percent: bool = False,
    width: int = 12,
) -> Timeseries:
    """A time series panel of ``queries``; ``stack_percent`` stacks them to 100%."""
    panel = (
        Timeseries()
        .id(layout.next_id())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .line_width(1)
        .fill_opacity(10)
        .targets(_targets(queries))
        .height(8)
        .span(width)
    )
    if stack_percent:
        panel = panel.stacking(StackingConfig().mode(StackingMode.PERCENT))
    return panel


def stat(
    layout: Layout, title: str, description: str, unit: str, expr: str, width: int = 6
) -> Stat:
    """A single-number panel (the last value of ``expr``)."""
    return (
        Stat()
        .id(layout.next_id())
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .targets(_targets(((expr, ""),)))
        .height(4)
        .span(width)
    )


def quantiles(metric: str, by: str, where: str, qs: tuple[float, ...]) -> list[tuple[str, str]]:
    """(histogram_quantile of ``metric`` by ``by`` at each of ``qs``, legend) queries."""
    selector = f"{metric}_bucket{{{where}}}" if where else f"{metric}_bucket"
    return [
        (
            f"histogram_quantile({q}, sum by ({by}, le) (rate({selector}{RATE})))",
            " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",")) + f" p{round(q * 100)}",
        )
        for q in qs
    ]


__all__ = [
    "DATASOURCE",
    "RATE",
    "Layout",
    "Query",
    "dashboard",
    "label_variable",
    "quantiles",
    "row",
    "stat",
    "timeseries",
]
