"""A/B assignment by device hash: stable, proportional, per experiment; guardrail stops arms."""

from __future__ import annotations

import pytest

from common.errors import InvalidArgument
from policy import Experiment, Guardrail


def test_assignment_is_stable_across_instances_and_order() -> None:
    a = Experiment("exp-1", {"control": 0.5, "dqn": 0.5}, control="control")
    b = Experiment("exp-1", {"dqn": 0.5, "control": 0.5}, control="control")
    devices = [f"device-{i}" for i in range(500)]
    first = [a.assign(d) for d in devices]
    assert first == [b.assign(d) for d in reversed(devices)][::-1]
    assert first == [a.assign(d) for d in devices]


def test_split_follows_weights_and_experiments_are_independent() -> None:
    exp = Experiment("exp-1", {"control": 0.8, "treat": 0.2}, control="control")
    other = Experiment("exp-2", {"control": 0.8, "treat": 0.2}, control="control")
    devices = [f"d{i}" for i in range(10_000)]
    share = sum(exp.assign(d) == "treat" for d in devices) / len(devices)
    assert 0.18 < share < 0.22
    both = sum(exp.assign(d) == "treat" and other.assign(d) == "treat" for d in devices) / len(
        devices
    )
    assert 0.02 < both < 0.06  # ≈ 0.2 × 0.2: the second experiment re-shuffles


def test_guardrail_stops_a_bad_arm_and_sends_its_devices_to_control() -> None:
    exp = Experiment(
        "exp-3",
        {"control": 0.5, "risky": 0.5},
        control="control",
        guardrail=Guardrail(min_accuracy=0.9, max_breach_rate=0.05, min_requests=50),
    )
    risky = next(d for d in (f"d{i}" for i in range(100)) if exp.assign(d) == "risky")
    for i in range(49):
        exp.record("risky", correct=i % 2 == 0, latency_ms=10.0, deadline_ms=100.0)
    assert exp.assign(risky) == "risky"  # not enough samples yet
    exp.record("risky", correct=False, latency_ms=10.0, deadline_ms=100.0)
    assert "accuracy" in exp.stopped["risky"]
    assert exp.assign(risky) == "control"
    assert exp.assigned_arm(risky) == "risky"
    for _ in range(60):
        exp.record("control", correct=False, latency_ms=500.0, deadline_ms=100.0)
    assert "control" not in exp.stopped  # control is never stopped
    report = exp.report()
    assert report["risky"]["requests"] == 50 and report["control"]["breach_rate"] == 1.0


def test_breach_rate_guardrail() -> None:
    exp = Experiment(
        "e",
        {"a": 1, "b": 1},
        control="a",
        guardrail=Guardrail(max_breach_rate=0.1, min_requests=10),
    )
    for _ in range(10):
        exp.record("b", correct=True, latency_ms=200.0, deadline_ms=100.0)
    assert "breach" in exp.stopped["b"]


def test_bad_definitions_are_rejected() -> None:
    with pytest.raises(InvalidArgument, match="control"):
        Experiment("e", {"a": 1.0}, control="b")
    with pytest.raises(InvalidArgument, match="weights"):
        Experiment("e", {"a": -1.0}, control="a")
