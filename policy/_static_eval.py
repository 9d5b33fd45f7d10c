"""Vectorised replay of static threshold + fixed-cut policies and the grid search that tunes the
best one on a given trace and environment (the baseline learned policies must beat)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policy._simulator import Environment, SimResult, Simulator


@dataclass(frozen=True, slots=True)
class StaticConfig:
    """Thresholds per exit and the fixed offload option (None: never offload)."""

    thresholds: tuple[float, ...]
    cut_point: str | None
    codec: str | None

    @property
    def label(self) -> str:
        thr = "/".join(f"{t:.2f}" for t in self.thresholds)
        where = f"{self.cut_point}/{self.codec}" if self.cut_point else "edge-only"
        return f"static[{thr} {where}]"


def evaluate_static(sim: Simulator, env: Environment, cfg: StaticConfig) -> SimResult:
    """Same outcomes as running :class:`StaticThresholdPolicy` through ``sim.run``, vectorised."""
    tr, c, w, model = sim.trace, sim.config, sim.config.weights, sim.model
    last = tr.profile.n_exits - 1
    idx = env.order
    n = idx.shape[0]
    net = env.net
    factor = model.edge_slowdown * (1.0 + model.load_gain * net.edge_load) / c.compute_share
    seg = np.array([e.segment_ms for e in tr.profile.exits])
    conf = tr.confidences[idx]
    elapsed = seg[0] * factor
    done = np.zeros(n, dtype=bool)
    at = np.full(n, last, dtype=np.int64)
    off = np.zeros(n, dtype=bool)
    off_at = -1
    if cfg.cut_point is not None:
        off_at = max(tr.profile.cut(cfg.cut_point).after_exit, 0)
    for k in range(last + 1):
        confident = conf[:, k] >= cfg.thresholds[k]
        offload = ~done & ~confident & (k == off_at) & (net.est_bandwidth_mbps > 0.0)
        leave = ~done & ~offload & (confident | (k == last))
        at[leave | offload] = k
        off |= offload
        done |= leave | offload
        if k < last:
            elapsed = np.where(done, elapsed, elapsed + seg[k + 1] * factor)
    rows = np.arange(n)
    correct = tr.correct[idx, at].copy()
    latency = elapsed.copy()
    cloud = np.zeros(n)
    n_bytes = np.zeros(n)
    if cfg.cut_point is not None and cfg.codec is not None and off.any():
        spec = tr.profile.cut(cfg.cut_point)
        cost = spec.codecs[cfg.codec]
        bw = net.bandwidth_mbps
        up = bw > 0.0
        tx = np.where(up, cost.bytes * 8.0 / (np.where(up, bw, 1.0) * 1000.0), np.inf)
        lat_off = (
            elapsed + cost.encode_ms * factor + tx + net.rtt_ms + model.cloud_queue_ms
            + cost.decode_ms + spec.tail_ms
        )  # fmt: skip
        ok = off & (lat_off <= c.deadline_ms)
        late = off & ~ok
        opt = tr.option_index(cfg.cut_point, cfg.codec)
        correct = np.where(ok, tr.cloud_correct[idx, opt], correct)
        latency = np.where(ok, lat_off, np.where(late, c.deadline_ms, latency))
        charged = off & up
        cloud = np.where(charged, w.cloud_cost(spec.tail_ms, 1.0), 0.0)
        n_bytes = np.where(charged, float(cost.bytes), 0.0)
    total = w.request_cost(correct.astype(np.float64), latency, c.deadline_ms, cloud, n_bytes)
    exit_at = np.where(off, -1, at)
    del rows
    return SimResult(cfg.label, total, correct, latency, cloud, n_bytes, off, exit_at, w.error)


def static_grid(sim: Simulator, thresholds: Sequence[float] | None = None) -> list[StaticConfig]:
    """Every combination of per-exit thresholds (the final exit always answers) and fixed
    offload option, including edge-only."""
    grid = (
        list(thresholds)
        if thresholds is not None
        else [*np.round(np.arange(0.5, 1.0, 0.025), 3), 1.01]
    )
    profile = sim.trace.profile
    last = profile.n_exits - 1
    options: list[tuple[str | None, str | None]] = [(None, None), *sim.trace.options]
    out = []
    for cut, codec in options:
        # The last exit's threshold matters only when this option offloads there.
        at_last = cut is not None and profile.cut(cut).after_exit == last
        for thr in itertools.product(grid, repeat=last + int(at_last)):
            out.append(StaticConfig(tuple(thr) if at_last else (*thr, 0.0), cut, codec))
    return out


def tune_static(
    sim: Simulator, env: Environment, configs: Sequence[StaticConfig] | None = None
) -> tuple[StaticConfig, SimResult]:
    """The static configuration with the lowest mean objective on ``env``."""
    best: tuple[StaticConfig, SimResult] | None = None
    for cfg in configs or static_grid(sim):
        res = evaluate_static(sim, env, cfg)
        if best is None or res.cost.mean() < best[1].cost.mean():
            best = (cfg, res)
    assert best is not None
    return best


__all__ = ["StaticConfig", "evaluate_static", "static_grid", "tune_static"]
