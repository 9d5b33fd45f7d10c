"""OnlineLearner (decision table and rewards) and PolicyPublisher (versions per device class),
without any transport."""

from __future__ import annotations

import pytest

from policy import (
    DecisionContext,
    HeuristicPolicy,
    LinUCBPolicy,
    ObjectiveWeights,
    OnlineLearner,
    PolicyPublisher,
    PolicySnapshot,
    ReportedOutcome,
    StaticThresholdPolicy,
    policy_from_state,
    synthetic_profile,
)


def _ctx() -> DecisionContext:
    return DecisionContext(exit_index=0, confidences=(0.4,), rtt_ms=10.0, deadline_ms=100.0)


def test_each_decision_learns_once_with_the_objective_as_reward() -> None:
    policy = LinUCBPolicy(synthetic_profile(), seed=0)
    learner = OnlineLearner(policy)
    decision_id, decision = learner.decide(_ctx())
    assert decision.policy_id == "linucb" and learner.pending == 1
    reported = ReportedOutcome(decision_id, correct=True, latency_ms=30.0, bytes_sent=1000)
    expected = -ObjectiveWeights().request_cost(1.0, 30.0, 100.0, 0.0, 1000.0)
    assert learner.reward(_ctx(), reported) == pytest.approx(expected)
    assert learner.report(reported)
    assert policy.counts.sum() == 1
    assert not learner.report(reported)  # each decision learns once
    assert not learner.report(ReportedOutcome("unknown", correct=True, latency_ms=1.0))


def test_the_decision_table_is_bounded() -> None:
    learner = OnlineLearner(HeuristicPolicy(synthetic_profile()), max_pending=2)
    first, _ = learner.decide(_ctx())
    for _ in range(2):
        learner.decide(_ctx())
    assert learner.pending == 2
    assert not learner.report(ReportedOutcome(first, correct=True, latency_ms=1.0))


def test_publisher_versions_and_serves_per_device_class() -> None:
    profile = synthetic_profile()
    heard: list[tuple[str, PolicySnapshot]] = []
    default = HeuristicPolicy(profile)
    pub = PolicyPublisher(default)
    stop = pub.subscribe(lambda cls, snap: heard.append((cls, snap)))
    first = pub.current("phone")
    assert first is not None and first.policy_version == 1 and first.kind == "heuristic"
    assert first.exit_thresholds == {e.name: e.threshold for e in profile.exits}
    static = StaticThresholdPolicy(profile, [0.5] * profile.n_exits, profile.cuts[-1].name)
    snap = pub.publish(static, "phone")
    assert snap.policy_version == 2 and static.version == 2
    assert snap.cut_point == profile.cuts[-1].name and snap.codec
    assert pub.current("phone") == snap and pub.current("cam") == first
    assert pub.policy("phone") is static and pub.policy("cam") is default
    assert pub.applies("phone", "phone") and pub.applies("", "cam")
    assert not pub.applies("", "phone") and not pub.applies("phone", "cam")
    assert heard == [("phone", snap)]
    # The snapshot's state rebuilds the policy on a device.
    assert policy_from_state(snap.state).thresholds == [0.5] * profile.n_exits  # type: ignore[attr-defined]
    stop()
    pub.publish(default)
    assert len(heard) == 1 and pub.current("cam").policy_version == 3  # type: ignore[union-attr]
