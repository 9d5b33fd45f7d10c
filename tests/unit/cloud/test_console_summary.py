"""The console's overview numbers (``cloud.rest._console.summary``) from a metrics registry:
SLA attainment at the largest bucket within the deadline, the per-region heatmap as counts per
bucket (not cumulative), cost and budget of the caller's organisation only."""

from __future__ import annotations

import pytest

from cloud._metrics import GatewayMetrics
from cloud.core import Principal, Role, acting_as
from cloud.rest._console import summary


@pytest.fixture
def metrics() -> GatewayMetrics:
    m = GatewayMetrics()
    for seconds in (0.0005, 0.0015, 0.03, 0.08, 0.25):
        m.request_duration.labels("m", "rest", "eu").observe(seconds)
    m.request_duration.labels("m", "rest", "us").observe(3.0)
    for status in ("OK", "OK", "OK", "OK", "OK", "INVALID_ARGUMENT"):
        m.requests.labels("m", "rest", status).inc()
    m.cache_requests.labels("m", "hit").inc(3)
    m.cache_requests.labels("m", "miss").inc(1)
    m.telemetry_events.labels("edge").inc(6)
    m.telemetry_events.labels("cloud").inc(4)
    m.cost.labels("acme", "m", "eu").inc(0.6)
    m.cost.labels("globex", "m", "us").inc(9.0)
    m.budget.labels("acme").set(10.0)
    m.budget_spent.labels("acme").set(0.6)
    m.budget.labels("globex").set(99.0)
    return m


def _as(org: str) -> Principal:
    return Principal("op", Role.OPERATOR, org)


def test_sla_and_heatmap(metrics: GatewayMetrics) -> None:
    with acting_as(_as("acme")):
        s = summary(metrics.registry, deadline_ms=100.0)
    assert s["requests"]["total"] == 6 and s["requests"]["ok"] == 5
    assert s["cache"] == {"hits": 3.0, "misses": 1.0}
    assert s["device_routes"] == {"edge": 6.0, "cloud": 4.0}
    # 4 of the 6 requests took at most 100 ms (the 0.1 s bucket)
    assert s["sla"] == {"deadline_ms": 100.0, "bucket_ms": 100.0, "finished": 6.0, "within": 4.0}
    with acting_as(_as("acme")):
        # a deadline between buckets counts only the buckets below it: 99 ms -> the 50 ms bucket
        assert summary(metrics.registry, deadline_ms=99.0)["sla"]["within"] == 3.0
    heat = s["latency_heatmap"]
    assert heat["bucket_upper_ms"][0] == 1.0 and heat["bucket_upper_ms"][-1] is None
    rows = {r["region"]: r["counts"] for r in heat["regions"]}
    assert sum(rows["eu"]) == 5 and sum(rows["us"]) == 1
    assert rows["eu"][0] == 1 and rows["eu"][1] == 1  # <= 1 ms, <= 2 ms
    assert rows["us"][heat["bucket_upper_ms"].index(5000.0)] == 1


def test_cost_and_budget_are_the_callers_org_only(metrics: GatewayMetrics) -> None:
    with acting_as(_as("acme")):
        cost = summary(metrics.registry, 100.0)["cost"]
    assert cost["org"] == "acme" and cost["total"] == pytest.approx(0.6)
    assert cost["per_1000"] == pytest.approx(100.0)
    assert cost["budget"] == 10.0 and cost["budget_spent"] == pytest.approx(0.6)
    with acting_as(_as("initech")):
        other = summary(metrics.registry, 100.0)["cost"]
    assert other["total"] == 0.0 and other["budget"] is None
    assert "globex" not in repr(other)
