"""Off-policy evaluation: IPS and DR recover on-policy values within their intervals."""

from __future__ import annotations

from policy import (
    SCENARIOS,
    ArmSpace,
    EpsilonGreedy,
    HeuristicPolicy,
    SimConfig,
    Simulator,
    StaticThresholdPolicy,
    Trace,
    off_policy_evaluate,
    on_policy_value,
)


def test_ips_and_dr_agree_with_on_policy_values(trace: Trace) -> None:
    head = trace.truncate(2)
    sim = Simulator(head, SCENARIOS["varying"], SimConfig())
    env = sim.environment(4)
    logger = EpsilonGreedy(
        HeuristicPolicy(head.profile, latency_model=sim.model), head.profile, 0.4, seed=0
    )
    logged = sim.run(logger, env, learn=False, log=True)
    assert logged.episodes is not None
    space = ArmSpace(head.profile)
    # the logging policy's own propensities: IPS of a policy identical to it is its mean reward
    for target in (
        StaticThresholdPolicy(head.profile, [0.8, 0.0], "cut1", "q4|ans"),
        HeuristicPolicy(head.profile, latency_model=sim.model),
    ):
        est = off_policy_evaluate(target, logged.episodes, space)
        on = sim.run(target, env, learn=False, log=True)
        assert on.episodes is not None
        value = on_policy_value(on.episodes).value
        assert est["dr"].contains(value), (est, value)
        assert est["ips"].contains(value), (est, value)
        assert est["dr"].high - est["dr"].low < 1.0
