"""docs/observability.md lists every metric the gateway exports (with its labels and their
values), every recorded series, alert and dashboard: its generated tables are current."""

from __future__ import annotations

import re

import pytest

from deploy.grafana import DASHBOARDS, exported_metrics
from deploy.grafana._docs import DOC, render_doc, tables


def test_generated_tables_are_current() -> None:
    text = DOC.read_text()
    assert render_doc(text, tables(DASHBOARDS)) == text, "run: python -m deploy.grafana"


def test_every_metric_label_alert_and_dashboard_is_on_the_page() -> None:
    text = DOC.read_text()
    blocks = tables(DASHBOARDS)
    values_table = text.split("Label values:\n", 1)[1].split("\n\n", 1)[0]
    documented = {
        label
        for row in values_table.splitlines()[2:]
        for label in re.findall(r"`(\w+)`", row.split("|")[1])
    }
    for m in exported_metrics():
        assert f"`{m.name}" in blocks["metrics-table"]
        assert set(m.labels) <= documented, f"{m.name}: no values documented for a label"
    assert blocks["alerts-table"].count("| `Aiml021") == 20
    for stem in DASHBOARDS:
        assert f"aiml021-{stem}.json" in text


def test_a_missing_block_is_an_error() -> None:
    with pytest.raises(ValueError, match="metrics-table"):
        render_doc("# no blocks\n", {"metrics-table": "| x |"})
