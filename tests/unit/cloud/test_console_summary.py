"""The console's overview numbers (``cloud.rest._console.summary``) from a metrics registry:
SLA attainment at the largest bucket within the deadline, the heatmap by region and device class
as counts per bucket (not cumulative), cost and budget of the caller's organisation only, the
expected accuracy of what devices answered."""

from __future__ import annotations

import pytest

from cloud._metrics import MAX_FREE_VALUES, OTHER, GatewayMetrics
from cloud.core import Principal, Role, TelemetryEvent, acting_as
from cloud.core._accounting import record_telemetry
from cloud.core._costs import Budget, CostAccountant, OrgDirectory, Prices
from cloud.rest._console import summary


@pytest.fixture
def metrics() -> GatewayMetrics:
    m = GatewayMetrics()
    for seconds in (0.0005, 0.0015, 0.03, 0.08, 0.25):
        m.request_duration.labels("m", "rest", "eu", "").observe(seconds)
    m.request_duration.labels("m", "rest", "us", "").observe(3.0)
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


def test_heatmap_rows_are_region_by_device_class(metrics: GatewayMetrics) -> None:
    metrics.set_regions({"eu"})
    for device_class, seconds in (("phone", 0.004), ("phone", 0.004), ("camera", 0.4)):
        metrics.child(metrics.request_duration, "m", "session", "eu", device_class).observe(seconds)
    with acting_as(_as("acme")):
        heat = summary(metrics.registry, 100.0)["latency_heatmap"]
    rows = {(r["region"], r["device_class"]): r["counts"] for r in heat["regions"]}
    edges = heat["bucket_upper_ms"]
    assert set(rows) == {("eu", ""), ("us", ""), ("eu", "phone"), ("eu", "camera")}
    assert rows[("eu", "phone")][edges.index(5.0)] == 2 and sum(rows[("eu", "phone")]) == 2
    assert rows[("eu", "camera")][edges.index(500.0)] == 1
    assert sum(rows[("eu", "")]) == 5  # requests that name no device class keep their row


def test_device_class_is_bounded_on_the_latency_histogram() -> None:
    m = GatewayMetrics()
    for i in range(MAX_FREE_VALUES + 10):
        m.child(m.request_duration, "m", "session", "", f"class-{i}").observe(0.01)
    m.child(m.request_duration, "m", "session", "", "x" * 65).observe(0.01)
    with acting_as(_as("acme")):
        rows = summary(m.registry, 100.0)["latency_heatmap"]["regions"]
    classes = {r["device_class"] for r in rows}
    assert len(classes) == MAX_FREE_VALUES + 1 and OTHER in classes
    other = next(r for r in rows if r["device_class"] == OTHER)
    assert sum(other["counts"]) == 11


def test_expected_accuracy_is_the_mean_confidence_devices_report() -> None:
    m = GatewayMetrics()
    events = [
        TelemetryEvent("d", request_id=str(i), route="edge", confidence=0.9) for i in range(3)
    ]
    events.append(TelemetryEvent("d", request_id="c", route="cloud", confidence=0.5))
    # no confidence reported (0), or a hostile one: not counted
    events += [
        TelemetryEvent("d", request_id="n", route="cloud", confidence=0.0),
        TelemetryEvent("d", request_id="x", route="cloud", confidence=float("nan")),
        TelemetryEvent("d", request_id="y", route="cloud", confidence=7.0),
    ]
    record_telemetry(m, lambda e: None, events)
    with acting_as(_as("acme")):
        acc = summary(m.registry, 100.0)["accuracy"]
    assert acc["answers"] == 4
    assert acc["expected"] == pytest.approx((0.9 * 3 + 0.5) / 4)
    assert acc["by_route"] == {"cloud": pytest.approx(0.5), "edge": pytest.approx(0.9)}
    with acting_as(_as("acme")):
        empty = summary(GatewayMetrics().registry, 100.0)["accuracy"]
    assert empty == {"answers": 0, "expected": None, "by_route": {}}


def test_setting_a_budget_keeps_its_period_and_what_was_spent() -> None:
    m = GatewayMetrics()
    now = [7200.0 * 10 + 5]
    costs = CostAccountant(
        m,
        Prices(),
        directory=OrgDirectory(orgs=frozenset({"acme"})),
        budgets={"acme": Budget(10.0, 7200.0)},
        clock=lambda: now[0],
    )
    costs._add("acme", 4.0)
    assert costs.set_budget("acme", 3.0) == Budget(3.0, 7200.0)
    assert costs.spent("acme") == 4.0 and costs.exhausted("dev-of-nobody") is False
    assert costs.directory.org_of("d") == "default"
    with acting_as(_as("acme")):
        cost = summary(m.registry, 100.0)["cost"]
    assert cost["budget"] == 3.0 and cost["budget_spent"] == 4.0
    # a new org becomes a known label value with a UTC-day budget counted from now
    assert costs.set_budget("initech", 0.0) == Budget(0.0, 86400.0)
    resolved = OrgDirectory(orgs=costs.directory.orgs, resolver=lambda d: "initech")
    assert resolved.org_of("dev-9") == "initech"
    assert costs.spent("initech") == 0.0
