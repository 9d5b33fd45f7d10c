"""deploy/prometheus: the rule files and the example configuration pass promtool's checks,
promtool's unit tests of the rules pass, every alert is tested both firing and quiet, and the
rules query only series the gateway exports or the rules themselves record."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana import exported_series, promql_metric_names, recorded_series

ROOT = Path(__file__).resolve().parents[3]
PROM = ROOT / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.rules.yml"))
TEST_RULE_FILES = sorted((PROM / "tests").glob("*.rules.yml"))
UNIT_TESTS = sorted((PROM / "tests").glob("*.test.yml"))


def _promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    if exe is None:
        raise RuntimeError("promtool not found: apt-get install prometheus (make system-deps)")
    proc = subprocess.run(
        [exe, *args], cwd=PROM, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _rules(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for path in paths:
        for group in yaml.safe_load(path.read_text())["groups"]:
            yield from group["rules"]


def test_rule_files_and_example_config_pass_promtool_check() -> None:
    out = _promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in out
    rules_in_config = yaml.safe_load((PROM / "prometheus.yml").read_text())["rule_files"]
    assert sorted(PROM / p for p in rules_in_config) == RULE_FILES
    _promtool("check", "rules", *(str(p.relative_to(PROM)) for p in TEST_RULE_FILES))


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    out = _promtool("test", "rules", *(str(p.relative_to(PROM)) for p in UNIT_TESTS))
    assert out.count("SUCCESS") == len(UNIT_TESTS)


def test_every_alert_is_unit_tested_firing_and_quiet() -> None:
    alerts = {r["alert"] for r in _rules(RULE_FILES) if "alert" in r}
    fires: set[str] = set()
    quiet: set[str] = set()
    for path in UNIT_TESTS:
        spec = yaml.safe_load(path.read_text())
        loaded = {(path.parent / f).resolve() for f in spec["rule_files"]}
        assert {p.resolve() for p in RULE_FILES} <= loaded, f"{path.name} loads every rule file"
        for case in spec["tests"]:
            for t in case.get("alert_rule_test", []):
                (fires if t["exp_alerts"] else quiet).add(t["alertname"])
    assert alerts and not alerts - fires, f"never tested firing: {sorted(alerts - fires)}"
    assert not alerts - quiet, f"never tested quiet: {sorted(alerts - quiet)}"
    assert not (fires | quiet) - alerts, "tests name alerts that do not exist"


def test_rules_query_only_exported_or_recorded_series() -> None:
    # Per-model SLA targets are recorded by operators' own rules (the test override shows how).
    known = exported_series() | recorded_series() | recorded_series(PROM / "tests") | {"up"}
    unknown = {}
    for rule in _rules(RULE_FILES):
        missing = promql_metric_names(rule["expr"]) - known
        if missing:
            unknown[rule.get("record") or rule["alert"]] = sorted(missing)
    assert not unknown


def test_every_alert_has_a_severity_and_a_summary() -> None:
    for rule in _rules(RULE_FILES):
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (model) (rate(aiml021_gateway_requests_total{status!~"OK|X"}[5m])) '
            "or 0 * model:aiml021_gateway_requests:rate5m",
            {"aiml021_gateway_requests_total", "model:aiml021_gateway_requests:rate5m"},
        ),
        (
            "histogram_quantile(0.95, sum by (model, le) "
            '(rate(aiml021_gateway_queue_seconds_bucket{model=~"$model"}[$__rate_interval])))',
            {"aiml021_gateway_queue_seconds_bucket"},
        ),
        ("label_values(aiml021_gateway_requests_total, model)", {"aiml021_gateway_requests_total"}),
        ('absent(up{job="aiml021-gateway"})', {"up"}),
        ('sum(x{kind="session"} offset 10m) >= 10 and on () group_left () y:z', {"x", "y:z"}),
    ],
)
def test_promql_metric_names(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names
