"""Trace simulator: replays a trace under a network profile, one request at a time, asking a
policy at each exit and charging the combined objective. Deterministic for a given seed; the same
seed gives every policy the same image order, arrival times, network and load."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from policy._base import Policy
from policy._network import NetworkSample, NetworkScenario
from policy._objective import ObjectiveWeights
from policy._profile import LatencyModel
from policy._trace import Trace
from policy._types import Action, Decision, DecisionContext, Outcome


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulation settings shared by every policy in a comparison."""

    deadline_ms: float = 100.0
    rate_hz: float = 20.0
    """Poisson arrival rate of requests."""
    edge_slowdown: float = 100.0
    """Device compute relative to the profiling CPU core (100: a low-power device class)."""
    load_gain: float = 1.0
    compute_share: float = 1.0
    """Share of a core the device class gets (``DecisionContext.compute_share``): local compute
    takes profiled time × ``edge_slowdown`` / share."""
    cloud_queue_ms: float = 2.0
    weights: ObjectiveWeights = field(default_factory=ObjectiveWeights)


@dataclass(frozen=True, slots=True)
class Environment:
    """One realisation: image order, arrival times and network per request."""

    order: npt.NDArray[np.int64]
    times: npt.NDArray[np.float64]
    net: NetworkSample


@dataclass(slots=True)
class Step:
    """One logged decision (for off-policy evaluation)."""

    context: DecisionContext
    decision: Decision
    reward: float


@dataclass(slots=True)
class SimResult:
    """Per-request outcomes of one run and their summary."""

    policy_id: str
    cost: npt.NDArray[np.float64]
    correct: npt.NDArray[np.bool_]
    latency_ms: npt.NDArray[np.float64]
    cloud_cost: npt.NDArray[np.float64]
    bytes_sent: npt.NDArray[np.float64]
    offloaded: npt.NDArray[np.bool_]
    exit_at: npt.NDArray[np.int64]
    """Exit index that answered locally (-1 when the cloud answered)."""
    error_weight: float = 0.0
    episodes: list[list[Step]] | None = None

    @property
    def resource_cost(self) -> npt.NDArray[np.float64]:
        """Per-request combined objective without the error term: latency against the SLA,
        breaches, cloud cost and bytes (accuracy is judged separately, as a constraint)."""
        return self.cost - self.error_weight * (1.0 - self.correct)

    def summary(self, deadline_ms: float) -> dict[str, float]:
        return {
            "objective": float(self.resource_cost.mean()),
            "lagrangian": float(self.cost.mean()),
            "accuracy": float(self.correct.mean()),
            "latency_mean_ms": float(self.latency_ms.mean()),
            "latency_p95_ms": float(np.percentile(self.latency_ms, 95)),
            "sla_breach_rate": float((self.latency_ms > deadline_ms).mean()),
            "offload_rate": float(self.offloaded.mean()),
            "first_exit_rate": float((self.exit_at == 0).mean()),
            "cloud_cost_mean": float(self.cloud_cost.mean()),
            "bytes_mean": float(self.bytes_sent.mean()),
        }


class Simulator:
    """Replays ``trace`` under ``network`` for any :class:`Policy`."""

    def __init__(self, trace: Trace, network: NetworkScenario, config: SimConfig | None = None):
        self.trace = trace
        self.network = network
        self.config = config or SimConfig()
        c = self.config
        self.model = LatencyModel(trace.profile, c.edge_slowdown, c.load_gain, c.cloud_queue_ms)
        self._opt = {opt: j for j, opt in enumerate(trace.options)}

    def environment(self, seed: int, n: int | None = None) -> Environment:
        """The realisation for ``seed``: ``n`` requests (default: every image once)."""
        rng = np.random.default_rng(seed)
        n = n or len(self.trace)
        order = (
            rng.permutation(len(self.trace))[:n]
            if n <= len(self.trace)
            else rng.integers(0, len(self.trace), n)
        )
        times = np.cumsum(rng.exponential(1.0 / self.config.rate_hz, n))
        return Environment(order, times, self.network.sample(times, rng))

    def offload_outcome(
        self,
        i: int,
        k: int,
        cut: str,
        codec: str,
        elapsed: float,
        bw: float,
        rtt: float,
        load: float,
    ) -> tuple[bool, float, float, float]:
        """(correct, latency, cloud cost, bytes) of offloading image ``i`` at exit ``k``."""
        c, tr = self.config, self.trace
        spec = tr.profile.cut(cut)
        if bw <= 0.0:  # link down: the request times out and the local answer is used
            return bool(tr.correct[i, k]), c.deadline_ms, 0.0, 0.0
        latency = elapsed + self.model.offload_ms(cut, codec, rtt, bw, load, c.compute_share)
        cloud = float(c.weights.cloud_cost(spec.tail_ms, 1.0))
        n_bytes = float(spec.codecs[codec].bytes)
        if latency > c.deadline_ms:  # the agent falls back to its local answer at the deadline
            return bool(tr.correct[i, k]), c.deadline_ms, cloud, n_bytes
        return bool(tr.cloud_correct[i, self._opt[(cut, codec)]]), latency, cloud, n_bytes

    def run(
        self, policy: Policy, env: Environment, *, learn: bool = True, log: bool = False
    ) -> SimResult:
        """Replay every request of ``env`` through ``policy``; ``learn`` feeds outcomes back."""
        c, tr, w = self.config, self.trace, self.config.weights
        n = env.order.shape[0]
        last = tr.profile.n_exits - 1
        out_cost = np.empty(n)
        out_correct = np.empty(n, dtype=bool)
        out_lat = np.empty(n)
        out_cloud = np.zeros(n)
        out_bytes = np.zeros(n)
        out_off = np.zeros(n, dtype=bool)
        out_exit = np.full(n, -1, dtype=np.int64)
        episodes: list[list[Step]] | None = [] if log else None
        conf, ent = tr.confidences.tolist(), tr.entropies.tolist()
        net = env.net
        for j in range(n):
            i = int(env.order[j])
            load = float(net.edge_load[j])
            est_bw = float(net.est_bandwidth_mbps[j])
            est_rtt = float(net.est_rtt_ms[j])
            elapsed = self.model.local_ms(-1, 0, load, c.compute_share)
            k = 0
            steps: list[tuple[DecisionContext, Decision, float]] = []
            while True:
                ctx = DecisionContext(
                    exit_index=k,
                    confidences=tuple(conf[i][: k + 1]),
                    entropy=ent[i][k],
                    rtt_ms=est_rtt,
                    bandwidth_mbps=est_bw,
                    edge_load=load,
                    deadline_ms=c.deadline_ms,
                    elapsed_ms=elapsed,
                    compute_share=c.compute_share,
                )
                d = policy.decide(ctx)
                if d.action is Action.CONTINUE_LOCAL and k < last:
                    extra = self.model.local_ms(k, k + 1, load, c.compute_share)
                    elapsed += extra
                    steps.append((ctx, d, -w.step_cost(extra, c.deadline_ms)))
                    k += 1
                    continue
                break
            cloud = n_bytes = 0.0
            if d.action is Action.OFFLOAD:
                correct, latency, cloud, n_bytes = self.offload_outcome(
                    i, k, d.cut_point, d.codec, elapsed, float(net.bandwidth_mbps[j]),
                    float(net.rtt_ms[j]), load,
                )  # fmt: skip
                out_off[j] = True
            else:
                correct, latency = bool(tr.correct[i, k]), elapsed
                out_exit[j] = k
                if d.action is Action.DEFER:  # refined later: pays the upload and the cloud
                    cut = min(
                        tr.profile.cuts, key=lambda s: min(q.bytes for q in s.codecs.values())
                    )
                    cloud = float(w.cloud_cost(cut.tail_ms, 1.0))
                    n_bytes = float(min(q.bytes for q in cut.codecs.values()))
            total = float(w.request_cost(float(correct), latency, c.deadline_ms, cloud, n_bytes))
            charged = -sum(s[2] for s in steps)
            steps.append((ctx, d, -(total - charged)))
            out_cost[j], out_correct[j], out_lat[j] = total, correct, latency
            out_cloud[j], out_bytes[j] = cloud, n_bytes
            if learn:
                self._feed(policy, steps, correct, latency, cloud, n_bytes)
            if episodes is not None:
                episodes.append([Step(s[0], s[1], s[2]) for s in steps])
        return SimResult(
            policy.policy_id, out_cost, out_correct, out_lat, out_cloud, out_bytes, out_off,
            out_exit, w.error, episodes,
        )  # fmt: skip

    @staticmethod
    def _feed(
        policy: Policy,
        steps: list[tuple[DecisionContext, Decision, float]],
        correct: bool,
        latency: float,
        cloud: float,
        n_bytes: float,
    ) -> None:
        togo = 0.0
        returns = []
        for _, _, r in reversed(steps):
            togo += r
            returns.append(togo)
        returns.reverse()
        for t, (ctx, d, r) in enumerate(steps):
            terminal = t == len(steps) - 1
            policy.update(
                Outcome(
                    context=ctx,
                    decision=d,
                    reward=r,
                    return_to_go=returns[t],
                    terminal=terminal,
                    next_context=None if terminal else steps[t + 1][0],
                    correct=correct if terminal else None,
                    latency_ms=latency if terminal else math.nan,
                    cloud_cost=cloud if terminal else 0.0,
                    bytes_sent=int(n_bytes) if terminal else 0,
                )
            )


__all__ = ["Environment", "SimConfig", "SimResult", "Simulator", "Step"]
