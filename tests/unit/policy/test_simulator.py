"""Simulator, network scenarios, traces and the vectorised static baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidArgument
from policy import (
    SCENARIOS,
    Action,
    HeuristicPolicy,
    NetworkScenario,
    SimConfig,
    Simulator,
    StaticConfig,
    StaticThresholdPolicy,
    Trace,
    evaluate_static,
    synthetic_trace,
    tune_static,
)
from policy._compare import CompareConfig, compare, mean_ci, ope_check


def test_vectorised_static_matches_the_simulator(trace: Trace) -> None:
    for name in ("varying", "outages"):
        sim = Simulator(trace, SCENARIOS[name])
        env = sim.environment(3)
        for cfg in (
            StaticConfig((0.9, 0.8, 0.0), "cut1", "q4|ans"),
            StaticConfig((0.7, 0.95, 0.0), "cut2", "int8"),
            StaticConfig((0.95, 0.9, 0.0), "input", "raw"),
            StaticConfig((0.8, 0.8, 0.0), None, None),
        ):
            fast = evaluate_static(sim, env, cfg)
            slow = sim.run(
                StaticThresholdPolicy(trace.profile, cfg.thresholds, cfg.cut_point, cfg.codec), env
            )
            np.testing.assert_allclose(fast.cost, slow.cost, atol=1e-9)
            np.testing.assert_array_equal(fast.correct, slow.correct)


def test_runs_are_deterministic_per_seed(trace: Trace) -> None:
    sim = Simulator(trace, SCENARIOS["varying"])
    a = sim.run(HeuristicPolicy(trace.profile, latency_model=sim.model), sim.environment(1))
    b = sim.run(HeuristicPolicy(trace.profile, latency_model=sim.model), sim.environment(1))
    np.testing.assert_array_equal(a.cost, b.cost)
    c = sim.run(HeuristicPolicy(trace.profile, latency_model=sim.model), sim.environment(2))
    assert not np.array_equal(a.cost, c.cost)
    s = a.summary(100.0)
    assert 0.0 < s["accuracy"] <= 1.0 and s["objective"] <= s["lagrangian"]


def test_outages_cut_the_link_and_offloads_fall_back(trace: Trace) -> None:
    prof = NetworkScenario("outages", outage_every_s=10.0, outage_s=5.0, estimate_lag_s=0.0)
    sim = Simulator(trace, prof)
    env = sim.environment(0)
    down = env.net.bandwidth_mbps == 0.0
    assert 0.3 < down.mean() < 0.7
    res = sim.run(StaticThresholdPolicy(trace.profile, [1.01, 1.01, 0.0], "input", "raw"), env)
    # with no lag the device knows the link is down and keeps everything local then
    assert not res.offloaded[down].any() and res.offloaded[~down].all()
    with pytest.raises(InvalidArgument):
        NetworkScenario("bogus")


def test_stale_estimate_makes_offloads_time_out(trace: Trace) -> None:
    prof = NetworkScenario("outages", outage_every_s=10.0, outage_s=5.0, estimate_lag_s=1.0)
    sim = Simulator(trace, prof)
    env = sim.environment(0)
    res = sim.run(StaticThresholdPolicy(trace.profile, [1.01, 1.01, 0.0], "input", "raw"), env)
    lost = res.offloaded & (env.net.bandwidth_mbps == 0.0)
    assert lost.any()
    assert (res.latency_ms[lost] == sim.config.deadline_ms).all()
    assert (res.bytes_sent[lost] == 0).all()


def test_trace_save_load_truncate(tmp_path: Path, trace: Trace) -> None:
    path = tmp_path / "t.npz"
    trace.save(path)
    back = Trace.load(path)
    assert back.profile == trace.profile and back.options == trace.options
    np.testing.assert_array_equal(back.correct, trace.correct)
    np.testing.assert_array_equal(back.cloud_correct, trace.cloud_correct)
    np.testing.assert_allclose(back.confidences, trace.confidences, atol=1e-3)
    head = trace.truncate(1)
    assert head.profile.n_exits == 1
    assert {c for c, _ in head.options} == {"input", "cut1"}
    with pytest.raises(InvalidArgument):
        trace.truncate(0)
    with pytest.raises(InvalidArgument, match="cannot read"):
        Trace.load(tmp_path / "missing.npz")


def test_synthetic_trace_is_calibrated() -> None:
    t = synthetic_trace(20_000, seed=1)
    conf, correct = t.confidences[:, 0], t.correct[:, 0]
    for lo, hi in ((0.5, 0.7), (0.7, 0.9), (0.9, 1.0)):
        m = (conf >= lo) & (conf < hi)
        assert abs(correct[m].mean() - conf[m].mean()) < 0.03


def test_head_only_device_offloads_at_its_last_exit(trace: Trace) -> None:
    head = trace.truncate(1)
    sim = Simulator(head, SCENARIOS["steady"], SimConfig(edge_slowdown=100.0))
    pol = HeuristicPolicy(head.profile, latency_model=sim.model, thresholds=[0.9])
    res = sim.run(pol, sim.environment(0))
    assert 0.0 < res.offloaded.mean() < 1.0
    _, best = tune_static(sim, sim.environment(0))
    assert (
        best.cost.mean()
        <= evaluate_static(sim, sim.environment(0), StaticConfig((0.9,), None, None)).cost.mean()
    )


def test_compare_and_ope_report_shapes(trace: Trace) -> None:
    head = trace.truncate(1).subset(np.arange(600))
    report = compare(
        head,
        SCENARIOS["varying"],
        SimConfig(),
        CompareConfig(kinds=("heuristic", "linucb"), seeds=(0, 1), epochs=1),
    )
    assert set(report["summary"]) >= {"heuristic", "linucb", "static"}
    assert report["summary"]["linucb"]["gain"]["n"] == 2
    ope = ope_check(head, SCENARIOS["varying"], SimConfig(), epochs=1)
    assert ope["heuristic"]["dr"]["low"] <= ope["heuristic"]["dr"]["high"]
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["low"] < 2.0 < ci["high"]


def test_every_action_can_happen_in_the_simulator(trace: Trace) -> None:
    sim = Simulator(trace, SCENARIOS["outages"])
    seen: set[Action] = set()

    class Spy(HeuristicPolicy):
        def decide(self, ctx):  # type: ignore[no-untyped-def]
            d = super().decide(ctx)
            seen.add(d.action)
            return d

    sim.run(Spy(trace.profile, latency_model=sim.model), sim.environment(0, n=4000))
    assert {Action.EXIT_LOCAL, Action.CONTINUE_LOCAL, Action.OFFLOAD} <= seen
