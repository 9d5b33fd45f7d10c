"""Adaptive cut-point selection (Neurosurgeon, Kang et al. 2017): pick the cut point and codec
that minimise predicted end-to-end latency for the live network estimate, among codecs within the
accuracy budget, and switch only when the new choice is better by a margin (hysteresis), so that a
noisy bandwidth estimate does not make the device flap between cuts.

With objective ``weights`` the selector minimises the predicted combined objective instead of the
latency alone (latency against the deadline, a breach, cloud cost and bytes, as
:class:`~policy.ObjectiveWeights` charges them): on a workload whose raw input is large (a camera
frame) the fastest cut is often the most expensive one, and a device should pay for speed only
where its own compute would miss the deadline."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from policy._objective import ObjectiveWeights
from policy._profile import LatencyModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CutChoice:
    """A cut point, its codec and the latency predicted for it when it was chosen."""

    cut_point: str
    codec: str
    after_exit: int
    predicted_ms: float
    score: float = math.nan
    """What the selector minimised: the latency, or the predicted objective with weights."""


class AdaptiveCutSelector:
    """Chooses where to cut from the profile and the network estimate, with hysteresis.

    ``hysteresis`` is the relative improvement a new candidate needs over the current choice
    (re-evaluated under the same estimate) before the selector switches to it.
    """

    def __init__(
        self,
        model: LatencyModel,
        *,
        accuracy_budget: float = 0.5,
        hysteresis: float = 0.15,
        weights: ObjectiveWeights | None = None,
    ) -> None:
        self.model = model
        self.weights = weights
        self.accuracy_budget = accuracy_budget
        self.hysteresis = hysteresis
        self.current: CutChoice | None = None
        self.switches = 0
        self._candidates = [
            (cut.name, codec, cut.after_exit)
            for cut in model.profile.cuts
            for codec, cost in cut.codecs.items()
            if cost.accuracy_drop <= accuracy_budget
        ]
        if not self._candidates:
            log.warning("no codec within an accuracy budget of %.2f points", accuracy_budget)

    def predict(
        self,
        cut: str,
        codec: str,
        after_exit: int,
        rtt_ms: float,
        bandwidth_mbps: float,
        load: float,
        share: float = 1.0,
        queue_ms: float = 0.0,
    ) -> float:
        """Predicted latency of a request that runs the head up to ``cut`` and offloads there;
        local compute starts after ``queue_ms`` (an input offload needs none)."""
        local = self.model.local_ms(-1, after_exit, load, share)
        return (local + queue_ms if local > 0.0 else 0.0) + self.model.offload_ms(
            cut, codec, rtt_ms, bandwidth_mbps, load, share
        )

    def _choice(
        self, cut: str, codec: str, after: int, net: tuple[float, float, float, float, float],
        deadline_ms: float,
    ) -> CutChoice:  # fmt: skip
        ms = self.predict(cut, codec, after, *net)
        w = self.weights
        if w is None:
            return CutChoice(cut, codec, after, ms, ms)
        cost = self.model.profile.cut(cut)
        score = w.request_cost(
            1.0, ms, deadline_ms, w.cloud_cost(cost.tail_ms, 1.0), float(cost.codecs[codec].bytes)
        )
        return CutChoice(cut, codec, after, ms, float(score))

    def best(
        self,
        rtt_ms: float,
        bandwidth_mbps: float,
        edge_load: float = 0.0,
        *,
        share: float = 1.0,
        queue_ms: float = 0.0,
        deadline_ms: float = math.inf,
    ) -> CutChoice | None:
        """The best candidate (least latency, or least objective with weights), ignoring
        hysteresis (None without candidates)."""
        net = (rtt_ms, bandwidth_mbps, edge_load, share, queue_ms)
        best: CutChoice | None = None
        for cut, codec, after in self._candidates:
            choice = self._choice(cut, codec, after, net, deadline_ms)
            if best is None or choice.score < best.score:
                best = choice
        return best

    def select(
        self,
        rtt_ms: float,
        bandwidth_mbps: float,
        edge_load: float = 0.0,
        *,
        share: float = 1.0,
        queue_ms: float = 0.0,
        deadline_ms: float = math.inf,
    ) -> CutChoice | None:
        """Update and return the current choice for this network estimate."""
        net = (rtt_ms, bandwidth_mbps, edge_load, share, queue_ms)
        best = self.best(rtt_ms, bandwidth_mbps, edge_load, share=share, queue_ms=queue_ms,
                         deadline_ms=deadline_ms)  # fmt: skip
        if best is None:
            return None
        cur = self.current
        if cur is None:
            self.current = best
            return best
        now = self._choice(cur.cut_point, cur.codec, cur.after_exit, net, deadline_ms)
        if (best.cut_point, best.codec) != (cur.cut_point, cur.codec) and best.score < now.score - (
            abs(now.score) * self.hysteresis
        ):
            self.current = best
            self.switches += 1
            log.debug("cut point -> %s/%s (%.2f ms)", best.cut_point, best.codec, best.predicted_ms)
            return best
        self.current = now
        return self.current


__all__ = ["AdaptiveCutSelector", "CutChoice"]
