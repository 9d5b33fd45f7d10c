"""Metric label values are bounded: names a client makes up never become series."""

from __future__ import annotations

from prometheus_client import generate_latest

from cloud._metrics import MAX_FREE_VALUES, OTHER, UNKNOWN_MODEL, GatewayMetrics


def _series(m: GatewayMetrics, name: str) -> list[dict[str, str]]:
    return [s.labels for family in m.registry.collect() for s in family.samples if s.name == name]


def test_unknown_model_names_share_one_label_and_metrics_do_not_grow() -> None:
    m = GatewayMetrics()
    m.add_model("fmnist")
    m.child(m.requests, "fmnist", "infer", "OK").inc()
    m.child(m.requests, "x0" + "y" * 10_000, "infer", "NOT_FOUND").inc()
    size = len(generate_latest(m.registry))
    for i in range(3000):
        m.child(m.requests, f"x{i}" + "y" * 10_000, "infer", "NOT_FOUND").inc()
    assert len(generate_latest(m.registry)) <= size + 8  # only the count's digits grow
    models = {s["model"] for s in _series(m, "aiml021_gateway_requests_total")}
    assert models == {"fmnist", UNKNOWN_MODEL}
    assert len(m._children) <= 2  # made-up names are not cached either


def test_device_filled_labels_keep_a_bounded_set_of_short_values() -> None:
    m = GatewayMetrics()
    m.add_model("fmnist")
    for i in range(MAX_FREE_VALUES + 50):
        m.child(m.offload_confidence, "fmnist", f"class-{i}").observe(0.5)
    m.child(m.offload_confidence, "fmnist", "phone").observe(0.5)
    m.child(m.offload_confidence, "fmnist", "class-0").observe(0.5)  # kept: seen first
    m.child(m.bytes_received, "c" * 65).inc()
    classes = {
        s["device_class"] for s in _series(m, "aiml021_gateway_offload_exit_confidence_count")
    }
    assert len(classes) == MAX_FREE_VALUES + 1 and OTHER in classes and "phone" not in classes
    assert {s["codec"] for s in _series(m, "aiml021_gateway_bytes_received_total")} == {OTHER}
