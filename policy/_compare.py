"""The comparison protocol behind ``aiml021 policy simulate`` and benchmarks/policy: per seed,
split the trace's images into a training and an evaluation half, tune the best static threshold +
fixed-cut policy on the evaluation half itself (the most favourable baseline), train each learned
policy on the training half under other network realisations, then run everything on the same
evaluation realisation. Gains are reported as mean and 95% t-interval over seeds; off-policy
estimates are checked against on-policy values on one realisation."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from policy._base import ArmSpace, Policy
from policy._heuristic import EpsilonGreedy, HeuristicPolicy, StaticThresholdPolicy
from policy._learned import LearnedPolicy
from policy._network import NetworkScenario
from policy._ope import off_policy_evaluate, on_policy_value
from policy._registry import make_policy
from policy._simulator import SimConfig, SimResult, Simulator
from policy._static_eval import StaticConfig, evaluate_static, static_grid
from policy._trace import Trace

log = logging.getLogger(__name__)

# Two-sided 95% Student t quantiles by degrees of freedom.
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}

LEARNED_DEFAULTS: dict[str, dict[str, Any]] = {
    "linucb": {"alpha": 1.0, "epsilon": 0.05},
    "thompson": {"v": 1.0, "epsilon": 0.05},
    "dqn": {"epsilon": 0.1},
}
"""Training-time hyperparameters; exploration by epsilon is switched off for evaluation."""


def mean_ci(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% t-interval half-width over ``values`` (e.g. one value per seed)."""
    arr = np.asarray(values, dtype=np.float64)
    n = arr.shape[0]
    mean = float(arr.mean())
    if n < 2:
        return {"mean": mean, "half_width": math.inf, "low": -math.inf, "high": math.inf, "n": n}
    half = _T95.get(n - 1, 1.96) * float(arr.std(ddof=1)) / math.sqrt(n)
    return {"mean": mean, "half_width": half, "low": mean - half, "high": mean + half, "n": n}


@dataclass(frozen=True)
class CompareConfig:
    """What to compare and how."""

    kinds: tuple[str, ...] = ("heuristic", "linucb", "thompson", "dqn")
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    epochs: int = 3
    """Training passes over the training half (each under a fresh network realisation)."""
    accuracy_margin: float = 0.01
    """The static baseline must reach the full model's accuracy minus this (1 point)."""
    max_accuracy_loss: float = 0.005
    """A learned policy counts only within this accuracy of the static baseline (0.5 point)."""
    kwargs: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(LEARNED_DEFAULTS))
    error_weights: tuple[float, ...] = ()
    """Candidate error weights for the learned policies, chosen per seed on held-out training
    data (empty: use the simulator's)."""


@dataclass(frozen=True)
class StaticFrontier:
    """Every static configuration's resource objective and accuracy on one realisation."""

    configs: tuple[StaticConfig, ...]
    objective: np.ndarray
    accuracy: np.ndarray

    @classmethod
    def evaluate(
        cls, sim: Simulator, env: Any, grid: Sequence[StaticConfig] | None = None
    ) -> StaticFrontier:
        configs = tuple(grid or static_grid(sim))
        results = [evaluate_static(sim, env, cfg) for cfg in configs]
        return cls(
            configs,
            np.array([r.resource_cost.mean() for r in results]),
            np.array([r.correct.mean() for r in results]),
        )

    def best(self, floor: float) -> int:
        """Index of the cheapest config reaching ``floor`` (the most accurate when none does)."""
        ok = np.flatnonzero(self.accuracy >= floor)
        if ok.size == 0:
            return int(np.argmax(self.accuracy))
        return int(ok[np.argmin(self.objective[ok])])

    def iso_accuracy_objective(self, accuracy: float) -> float:
        """Cheapest static objective at an accuracy of at least ``accuracy`` (nan if none)."""
        ok = self.accuracy >= accuracy
        return float(self.objective[ok].min()) if ok.any() else math.nan


def best_static(
    sim: Simulator, env: Any, floor: float, grid: Sequence[StaticConfig] | None = None
) -> tuple[StaticConfig, SimResult]:
    """Lowest resource objective among static configs whose accuracy reaches ``floor`` (the most
    accurate one when none does)."""
    front = StaticFrontier.evaluate(sim, env, grid)
    cfg = front.configs[front.best(floor)]
    return cfg, evaluate_static(sim, env, cfg)


def _with_error_weight(sim: Simulator, error: float) -> Simulator:
    config = replace(sim.config, weights=replace(sim.config.weights, error=error))
    return Simulator(sim.trace, sim.network, config)


def _validation(sim_tr: Simulator, seed: int, cfg: CompareConfig) -> tuple[Any, float]:
    """A held-out realisation of the training half and the accuracy a learned policy must keep
    there: the best static policy's (tuned on it) minus half the allowed loss."""
    env = sim_tr.environment(20_000 + seed)
    front = StaticFrontier.evaluate(sim_tr, env)
    floor = float(sim_tr.trace.cloud_correct[:, 0].mean()) - cfg.accuracy_margin
    return env, float(front.accuracy[front.best(floor)]) - cfg.max_accuracy_loss / 2


def _select_error_weight(
    kind: str,
    train: Trace,
    sim_tr: Simulator,
    seed: int,
    cfg: CompareConfig,
    val: tuple[Any, float],
) -> tuple[Policy, float]:
    """Train one policy per error weight (the Lagrange multiplier of the accuracy constraint) and
    keep the cheapest that holds the accuracy target on held-out training data (else the most
    accurate). Uses the training half only."""
    env, target = val
    best: tuple[bool, float, float, Policy, float] | None = None
    for lam in cfg.error_weights:
        sim = _with_error_weight(sim_tr, lam)
        policy = train_policy(kind, train, sim, seed, cfg.epochs, cfg.kwargs.get(kind, {}))
        assert isinstance(policy, LearnedPolicy)
        policy.learning = False
        res = sim.run(policy, env, learn=False)
        policy.learning = True
        acc, obj = float(res.correct.mean()), float(res.resource_cost.mean())
        ok = acc >= target
        key = (ok, -obj if ok else acc)
        if best is None or key > (best[0], best[1]):
            best = (ok, key[1], acc, policy, lam)
        log.info(
            "seed %d %s error weight %g: held-out accuracy %.4f, objective %.4f",
            seed,
            kind,
            lam,
            acc,
            obj,
        )
    assert best is not None
    return best[3], best[4]


def train_policy(
    kind: str, trace: Trace, sim: Simulator, seed: int, epochs: int, kwargs: dict[str, Any]
) -> Policy:
    """A policy of ``kind`` trained on ``sim`` (heuristics need no training)."""
    if kind == "heuristic":
        return HeuristicPolicy(trace.profile, latency_model=sim.model, **kwargs)
    policy = make_policy(kind, trace.profile, latency_model=sim.model, seed=seed, **kwargs)
    for ep in range(epochs):
        sim.run(policy, sim.environment(10_000 + 100 * seed + ep))
    assert isinstance(policy, LearnedPolicy)
    policy.epsilon = 0.0
    return policy


def compare(
    trace: Trace, network: NetworkScenario, sim_config: SimConfig, cfg: CompareConfig
) -> dict[str, Any]:
    """Run the protocol; returns a JSON-serialisable report."""
    per_seed: list[dict[str, Any]] = []
    floor_ref = float(trace.cloud_correct[:, 0].mean())
    for seed in cfg.seeds:
        perm = np.random.default_rng(seed).permutation(len(trace))
        half = len(trace) // 2
        train, test = trace.subset(perm[:half]), trace.subset(perm[half:])
        sim_tr = Simulator(train, network, sim_config)
        sim_te = Simulator(test, network, sim_config)
        env = sim_te.environment(seed)
        floor = float(test.cloud_correct[:, 0].mean()) - cfg.accuracy_margin
        front = StaticFrontier.evaluate(sim_te, env)
        scfg = front.configs[front.best(floor)]
        sres = evaluate_static(sim_te, env, scfg)
        row: dict[str, Any] = {
            "seed": seed,
            "accuracy_floor": floor,
            "static": {"config": scfg.label, **sres.summary(sim_config.deadline_ms)},
            "static_reaches_floor": bool(sres.correct.mean() >= floor),
        }
        j_static = float(sres.resource_cost.mean())
        val: tuple[Any, float] | None = None
        for kind in cfg.kinds:
            lam = sim_config.weights.error
            if kind == "heuristic" or len(cfg.error_weights) < 2:
                policy = train_policy(
                    kind, train, sim_tr, seed, cfg.epochs, cfg.kwargs.get(kind, {})
                )
            else:
                if val is None:
                    val = _validation(sim_tr, seed, cfg)
                policy, lam = _select_error_weight(kind, train, sim_tr, seed, cfg, val)
            run_sim = sim_te if lam == sim_config.weights.error else _with_error_weight(sim_te, lam)
            res = run_sim.run(policy, env)
            s = res.summary(sim_config.deadline_ms)
            s["error_weight"] = lam
            s["gain"] = 1.0 - s["objective"] / j_static
            s["accuracy_delta"] = s["accuracy"] - float(sres.correct.mean())
            # Iso-accuracy view: the cheapest static policy at least as accurate as this one.
            iso = front.iso_accuracy_objective(s["accuracy"])
            s["iso_accuracy_static_objective"] = iso
            s["iso_accuracy_gain"] = 1.0 - s["objective"] / iso if math.isfinite(iso) else math.nan
            row[kind] = s
            log.info(
                "seed %d %s: gain %.3f, accuracy delta %+.4f",
                seed,
                kind,
                s["gain"],
                s["accuracy_delta"],
            )
        per_seed.append(row)
    summary: dict[str, Any] = {}
    for kind in cfg.kinds:
        gains = [r[kind]["gain"] for r in per_seed]
        deltas = [r[kind]["accuracy_delta"] for r in per_seed]
        summary[kind] = {
            "gain": mean_ci(gains),
            "accuracy_delta": mean_ci(deltas),
            "objective": mean_ci([r[kind]["objective"] for r in per_seed]),
            "within_accuracy": bool(np.mean(deltas) >= -cfg.max_accuracy_loss),
            "iso_accuracy_gain": mean_ci(
                [
                    r[kind]["iso_accuracy_gain"]
                    for r in per_seed
                    if math.isfinite(r[kind]["iso_accuracy_gain"])
                ]
                or [math.nan]
            ),
        }
    summary["static"] = {
        "objective": mean_ci([r["static"]["objective"] for r in per_seed]),
        "accuracy": mean_ci([r["static"]["accuracy"] for r in per_seed]),
    }
    learned = [k for k in cfg.kinds if k != "heuristic" and summary[k]["within_accuracy"]]
    best = max(learned, key=lambda k: summary[k]["gain"]["mean"], default=None)
    return {
        "trace": trace.source,
        "images": len(trace),
        "full_model_accuracy": floor_ref,
        "network": network.kind,
        "sim_config": {
            "deadline_ms": sim_config.deadline_ms,
            "edge_slowdown": sim_config.edge_slowdown,
            "rate_hz": sim_config.rate_hz,
            "error_weight": sim_config.weights.error,
            "exits_on_device": trace.profile.n_exits,
        },
        "per_seed": per_seed,
        "summary": summary,
        "best_learned": best,
    }


def ope_check(
    trace: Trace,
    network: NetworkScenario,
    sim_config: SimConfig,
    *,
    seed: int = 0,
    epsilon: float = 0.3,
    epochs: int = 2,
) -> dict[str, Any]:
    """Log with an epsilon-greedy heuristic, estimate several target policies off-policy (IPS,
    DR) and compare with their on-policy value on the same realisation."""
    sim = Simulator(trace, network, sim_config)
    env = sim.environment(seed)
    logger = EpsilonGreedy(
        HeuristicPolicy(trace.profile, latency_model=sim.model), trace.profile, epsilon, seed
    )
    logged = sim.run(logger, env, learn=False, log=True)
    assert logged.episodes is not None
    space = ArmSpace(trace.profile)
    floor = float(trace.cloud_correct[:, 0].mean()) - 0.01
    scfg, _ = best_static(sim, env, floor)
    targets: dict[str, Policy] = {
        "heuristic": HeuristicPolicy(trace.profile, latency_model=sim.model),
        "static": StaticThresholdPolicy(trace.profile, scfg.thresholds, scfg.cut_point, scfg.codec),
    }
    for kind in ("linucb", "dqn"):
        pol = train_policy(kind, trace, sim, seed + 1, epochs, dict(LEARNED_DEFAULTS[kind]))
        assert isinstance(pol, LearnedPolicy)
        pol.learning = False
        targets[kind] = pol
    out: dict[str, Any] = {"logging_policy": logger.policy_id, "requests": len(logged.episodes)}
    for name, target in targets.items():
        est = off_policy_evaluate(target, logged.episodes, space)
        on = sim.run(target, env, learn=False, log=True)
        assert on.episodes is not None
        value = on_policy_value(on.episodes)
        out[name] = {
            "on_policy": value.as_dict(),
            "ips": est["ips"].as_dict(),
            "dr": est["dr"].as_dict(),
            "ips_agrees": est["ips"].contains(value.value),
            "dr_agrees": est["dr"].contains(value.value),
        }
    return out


__all__ = [
    "LEARNED_DEFAULTS",
    "CompareConfig",
    "StaticFrontier",
    "best_static",
    "compare",
    "mean_ci",
    "ope_check",
    "train_policy",
]
