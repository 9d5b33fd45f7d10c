"""Operators' policy changes without a transport: configurations validated field by field and
published per device class, A/B experiments that split a class by device id, fed by reported
outcomes, stopped by hand or by their guardrail, and the limits that bound all of it."""

from __future__ import annotations

import math
from typing import Any

import pytest

from common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from policy import (
    DecisionContext,
    HeuristicPolicy,
    OnlineLearner,
    PolicyAdmin,
    PolicyPublisher,
    PolicySnapshot,
    PublishRate,
    ReportedOutcome,
    describe,
    parse_config,
    synthetic_profile,
)


def _admin(**kwargs: Any) -> tuple[PolicyAdmin, PolicyPublisher, OnlineLearner]:
    pub = PolicyPublisher(HeuristicPolicy(synthetic_profile()))
    admin = PolicyAdmin(pub, **kwargs)
    learner = OnlineLearner(
        pub.policy() or HeuristicPolicy(synthetic_profile()),
        route=lambda ctx: pub.policy(ctx.device_class, ctx.device_id),
    )
    learner.observers.append(admin.observe)
    return admin, pub, learner


def _ctx(device: str, device_class: str = "phone") -> DecisionContext:
    return DecisionContext(
        exit_index=0,
        confidences=(0.5,),
        deadline_ms=100.0,
        device_class=device_class,
        device_id=device,
    )


def test_a_configuration_reads_back_as_it_was_set_and_keeps_unnamed_exits() -> None:
    profile = synthetic_profile()
    config = parse_config(
        {"kind": "heuristic", "thresholds": {"exit1": 0.8}, "params": {"hysteresis": 0.3}},
        profile,
        {"exit1": 0.5, "exit2": 0.7, "final": 0.0},
    )
    assert config.thresholds == {"exit1": 0.8, "exit2": 0.7, "final": 0.0}
    built = describe(config.build(profile, "h"))
    assert built == {
        "kind": "heuristic",
        "thresholds": {"exit1": 0.8, "exit2": 0.7, "final": 0.0},
        "params": {"accuracy_budget": 0.5, "hysteresis": 0.3},
    }
    dqn = parse_config({"kind": "dqn", "params": {"hidden": 16, "hint": True}}, profile)
    described = describe(dqn.build(profile, "d"))
    assert described["params"]["hidden"] == 16 and described["params"]["hint"] is True
    assert described["params"]["lr"] == pytest.approx(1e-3) and described["thresholds"] == {}
    static = parse_config(
        {"kind": "static", "params": {"cut_point": "cut1", "codec": "q4|ans"}}, profile
    )
    assert describe(static.build(profile, "s"))["params"] == {
        "cut_point": "cut1",
        "codec": "q4|ans",
    }


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ([], "body"),
        ({"kind": "ppo"}, "kind"),
        ({"kind": ["heuristic"]}, "kind"),
        ({"kind": "heuristic", "thresholds": {"exit1": math.nan}}, "thresholds.exit1"),
        ({"kind": "heuristic", "thresholds": {"exit1": math.inf}}, "thresholds.exit1"),
        ({"kind": "heuristic", "thresholds": {"exit1": 1.5}}, "thresholds.exit1"),
        ({"kind": "heuristic", "thresholds": {"exit1": True}}, "thresholds.exit1"),
        ({"kind": "heuristic", "thresholds": {"exit9": 0.5}}, "thresholds.exit9"),
        ({"kind": "heuristic", "thresholds": [0.5]}, "thresholds"),
        ({"kind": "linucb", "thresholds": {"exit1": 0.5}}, "thresholds"),
        ({"kind": "linucb", "params": {"alpha": -1}}, "params.alpha"),
        ({"kind": "linucb", "params": {"alpha": "1"}}, "params.alpha"),
        ({"kind": "dqn", "params": {"hidden": 10**9}}, "params.hidden"),
        ({"kind": "dqn", "params": {"hidden": 16.5}}, "params.hidden"),
        ({"kind": "dqn", "params": {"hint": 1}}, "params.hint"),
        ({"kind": "dqn", "params": {"buffer_size": 10**9}}, "params.buffer_size"),
        ({"kind": "static", "params": {"cut_point": "cut9"}}, "params.cut_point"),
        ({"kind": "static", "params": {"cut_point": "cut1", "codec": "zip"}}, "params.codec"),
        ({"kind": "heuristic", "state": "x"}, "state"),
    ],
)
def test_every_bad_configuration_names_its_field(doc: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        parse_config(doc, synthetic_profile())
    assert err.value.message.startswith(f"{field}:"), err.value.message


def test_configure_publishes_to_the_class_and_its_devices_hear_of_it() -> None:
    admin, pub, _ = _admin()
    heard: list[tuple[str, PolicySnapshot]] = []
    pub.subscribe(lambda cls, snap: heard.append((cls, snap)))
    out = admin.configure(
        {"device_class": "phone", "kind": "heuristic", "thresholds": {"exit1": 0.61}}
    )
    assert out["device_class"] == "phone" and out["thresholds"]["exit1"] == 0.61
    assert out["policy_version"] == 2 and out["experiment"] is None
    snap = pub.current("phone")
    assert snap is not None and snap.exit_thresholds["exit1"] == 0.61
    assert heard == [("phone", snap)]
    assert [c["device_class"] for c in admin.configs()] == ["", "phone"]
    # another operator edited in between: the stale edit is refused
    with pytest.raises(FailedPrecondition, match="expected_version"):
        admin.configure({"device_class": "phone", "kind": "dqn", "expected_version": 1})
    admin.configure({"device_class": "phone", "kind": "dqn", "expected_version": 2})
    assert pub.current("phone").kind == "dqn"  # type: ignore[union-attr]
    with pytest.raises(InvalidArgument, match="device_class"):
        admin.configure({"device_class": "../x", "kind": "dqn"})


def test_publishes_are_rate_limited_and_classes_bounded() -> None:
    now = [0.0]
    admin, _, _ = _admin(rate=PublishRate(burst=3, per_s=0.5, clock=lambda: now[0]), max_classes=4)
    for i in range(3):  # with the default class: 4
        admin.configure({"device_class": f"c{i}", "kind": "heuristic"})
    with pytest.raises(ResourceExhausted, match=r"retry in 2\.0 s"):
        admin.configure({"device_class": "c0", "kind": "heuristic"})
    now[0] += 2.0
    with pytest.raises(ResourceExhausted, match="at most 4 device classes"):
        admin.configure({"device_class": "c9", "kind": "heuristic"})
    admin.configure({"device_class": "c0", "kind": "heuristic"})  # an existing class still may


def test_an_experiment_splits_the_class_by_device_and_fills_from_reported_outcomes() -> None:
    admin, pub, learner = _admin()
    admin.configure({"device_class": "phone", "kind": "heuristic"})
    exp = admin.create(
        {
            "name": "low-exit1",
            "device_class": "phone",
            "treatment": {"kind": "heuristic", "thresholds": {"exit1": 0.2}},
            "split": 0.5,
        },
        actor="op-1",
    )
    assert exp["state"] == "running" and exp["created_by"] == "op-1"
    assert exp["arms"]["treatment"]["thresholds"]["exit1"] == 0.2
    devices = [f"dev-{i}" for i in range(200)]
    arms = {d: pub.current("phone", d) for d in devices}
    treated = [d for d, s in arms.items() if s is not None and s.exit_thresholds["exit1"] == 0.2]
    assert 60 <= len(treated) <= 140  # about half, by a hash of the device id
    assert pub.current("cam", treated[0]).exit_thresholds["exit1"] == 0.93  # type: ignore[union-attr]
    with pytest.raises(FailedPrecondition, match="under experiment"):
        admin.configure({"device_class": "phone", "kind": "heuristic"})
    with pytest.raises(FailedPrecondition, match="already under experiment"):
        admin.create({"name": "other", "device_class": "phone", "treatment": {"kind": "dqn"}})
    with pytest.raises(AlreadyExists):
        admin.create({"name": "low-exit1", "device_class": "cam", "treatment": {"kind": "dqn"}})
    # decisions follow the arm; the treatment (threshold 0.2) exits at confidence 0.5
    for d in devices:
        decision_id, decision = learner.decide(_ctx(d))
        assert (decision.threshold == 0.2) == (d in treated)
        learner.report(
            ReportedOutcome(
                decision_id, correct=d in treated, latency_ms=50.0 if d in treated else 150.0
            )
        )
    learner.report(ReportedOutcome(learner.decide(_ctx(""))[0], correct=True, latency_ms=1.0))
    results = {a: v["results"] for a, v in admin.experiment("low-exit1")["arms"].items()}
    assert results["treatment"]["requests"] == len(treated)
    assert results["control"]["requests"] == len(devices) - len(treated)  # no device: not counted
    assert results["treatment"]["accuracy"] == 1.0 and results["control"]["accuracy"] == 0.0
    assert results["control"]["breach_rate"] == 1.0 and results["treatment"]["breach_rate"] == 0.0
    stopped = admin.stop("low-exit1", actor="op-2")
    assert stopped["state"] == "stopped" and stopped["stopped_by"] == "op-2"
    assert all(pub.current("phone", d).exit_thresholds["exit1"] == 0.93 for d in treated)  # type: ignore[union-attr]
    assert admin.stop("low-exit1")["stopped_by"] == "op-2"  # stopping again changes nothing
    with pytest.raises(NotFound):
        admin.stop("nope")


def test_the_guardrail_ends_an_experiment_whose_treatment_falls_short() -> None:
    admin, pub, learner = _admin()
    pushed: list[str] = []
    pub.subscribe(lambda cls, snap: pushed.append(cls))
    admin.create(
        {
            "name": "bad",
            "treatment": {"kind": "heuristic", "thresholds": {"exit1": 0.0}},
            "split": 0.99,
            "guardrail": {"min_accuracy": 0.9, "min_requests": 20},
        }
    )
    for i in range(100):
        decision_id, _ = learner.decide(_ctx(f"d{i}", "cam"))
        learner.report(ReportedOutcome(decision_id, correct=False, latency_ms=10.0))
    exp = admin.experiment("bad")
    assert exp["state"] == "stopped" and exp["reason"].startswith("guardrail: accuracy 0.0000")
    assert exp["arms"]["treatment"]["results"]["requests"] == 20
    assert pub.current("cam", "d1").exit_thresholds["exit1"] == 0.93  # type: ignore[union-attr]
    assert pushed[-1] == ""  # devices were told


def test_experiments_are_bounded_and_stopped_ones_make_room() -> None:
    admin, _, _ = _admin(max_experiments=3, rate=PublishRate(burst=10_000))
    for i in range(3):
        admin.create({"name": f"e{i}", "device_class": f"c{i}", "treatment": {"kind": "dqn"}})
    with pytest.raises(ResourceExhausted, match="at most 3 experiments"):
        admin.create({"name": "e3", "device_class": "c3", "treatment": {"kind": "dqn"}})
    admin.stop("e0")
    admin.create({"name": "e3", "device_class": "c3", "treatment": {"kind": "dqn"}})
    assert [e["name"] for e in admin.experiments()] == ["e3", "e2", "e1"]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"name": "", "treatment": {"kind": "dqn"}}, "name"),
        ({"name": "x" * 65, "treatment": {"kind": "dqn"}}, "name"),
        ({"name": "a", "treatment": {"kind": "dqn"}, "split": 1.0}, "split"),
        ({"name": "a", "treatment": {"kind": "dqn"}, "split": math.nan}, "split"),
        ({"name": "a"}, "treatment"),
        ({"name": "a", "treatment": {"kind": "ppo"}}, "treatment.kind"),
        (
            {"name": "a", "treatment": {"kind": "dqn"}, "guardrail": {"min_requests": 0}},
            "guardrail.min_requests",
        ),
        ({"name": "a", "treatment": {"kind": "dqn"}, "guardrail": {"x": 1}}, "x"),
        ({"name": "a", "treatment": {"kind": "dqn"}, "arms": 3}, "arms"),
    ],
)
def test_bad_experiments_name_their_field(doc: dict[str, Any], field: str) -> None:
    admin, _, _ = _admin()
    with pytest.raises(InvalidArgument) as err:
        admin.create(doc)
    assert err.value.message.startswith(f"{field}:"), err.value.message
