"""deploy/grafana: the committed dashboards are what the generator writes, decode as Grafana
dashboards through grafana-foundation-sdk's model without losing a field, and query only series
the gateway exports (or our Prometheus rules record); drill-downs use labels that exist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog import runtime
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import prometheus
from grafana_foundation_sdk.models.dashboard import Dashboard as DashboardModel
from grafana_foundation_sdk.models.dashboard import Panel, RowPanel

from deploy.grafana import (
    DASHBOARDS,
    OUT_DIR,
    exported_metrics,
    promql_metric_names,
    queries,
    render,
    unknown_series,
)
from deploy.grafana.__main__ import main

register_default_plugins()  # the model decodes panel options and queries through them


def _committed(stem: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((OUT_DIR / f"aiml021-{stem}.json").read_text())
    return data


def test_committed_files_are_exactly_the_dashboards() -> None:
    assert sorted(p.name for p in OUT_DIR.glob("*.json")) == sorted(
        f"aiml021-{stem}.json" for stem in DASHBOARDS
    )


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_committed_json_is_what_the_generator_writes(stem: str) -> None:
    path = OUT_DIR / f"aiml021-{stem}.json"
    assert path.read_text() == render(DASHBOARDS[stem]()), "run: python -m deploy.grafana"


def test_check_mode_reports_a_stale_dashboard(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import deploy.grafana.__main__ as cli

    for stem, build in DASHBOARDS.items():
        (tmp_path / f"aiml021-{stem}.json").write_text(render(build()))
    doc = tmp_path / "observability.md"
    doc.write_text(cli.DOC.read_text())
    monkeypatch.setattr(cli, "OUT_DIR", tmp_path)
    monkeypatch.setattr(cli, "DOC", doc)
    assert main(["--check"]) == 0
    (tmp_path / "aiml021-cache.json").write_text("{}\n")
    assert main(["--check"]) == 1
    assert main([]) == 0 and main(["--check"]) == 0  # rewritten
    assert json.loads((tmp_path / "aiml021-cache.json").read_text())["uid"] == "aiml021-cache"


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_dashboard_decodes_through_the_sdk_model_without_losing_fields(stem: str) -> None:
    data = _committed(stem)
    model = DashboardModel.from_json(data)
    assert json.loads(JSONEncoder(sort_keys=True).encode(model)) == data
    assert model.uid == f"aiml021-{stem}" and model.title
    panels = [p for p in model.panels or [] if isinstance(p, Panel)]
    assert panels and all(isinstance(p, Panel | RowPanel) for p in model.panels or [])
    ids = [p.id_val for p in model.panels or []]
    assert len(ids) == len(set(ids)) and 0 not in ids
    for p in panels:
        assert runtime.panelcfg_config(p.type_val) is not None, p.type_val
        assert p.grid_pos is not None and p.grid_pos.x + p.grid_pos.w <= 24
        assert p.datasource is not None and p.datasource.uid == "${datasource}"
        assert p.targets, p.title
        for t in p.targets:
            assert isinstance(t, prometheus.Dataquery) and t.expr and t.ref_id, p.title


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_every_query_names_only_exported_or_recorded_series(stem: str) -> None:
    data = _committed(stem)
    assert unknown_series(data) == []
    for where, expr in queries(data):
        assert promql_metric_names(expr), f"{where}: no metric found in {expr}"


@pytest.mark.parametrize("stem", sorted(DASHBOARDS))
def test_drill_down_variables_use_labels_the_metric_has(stem: str) -> None:
    labels = {s: m.labels for m in exported_metrics() for s in m.series}
    variables = _committed(stem)["templating"]["list"]
    assert variables[0]["type"] == "datasource" and variables[0]["query"] == "prometheus"
    drill = [v for v in variables if v["type"] == "query"]
    assert drill, "every dashboard drills down by at least one label"
    for v in drill:
        (metric,) = promql_metric_names(v["query"])
        assert v["name"] in labels[metric], f"{metric} has no label {v['name']}"
        assert v["multi"] and v["includeAll"] and v["allValue"] == ".*"
