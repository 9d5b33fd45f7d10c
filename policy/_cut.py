"""Adaptive cut-point selection (Neurosurgeon, Kang et al. 2017): pick the cut point and codec
that minimise predicted end-to-end latency for the live network estimate, among codecs within the
accuracy budget, and switch only when the new choice is better by a margin (hysteresis), so that a
noisy bandwidth estimate does not make the device flap between cuts."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from policy._profile import LatencyModel

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CutChoice:
    """A cut point, its codec and the latency predicted for it when it was chosen."""

    cut_point: str
    codec: str
    after_exit: int
    predicted_ms: float


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
    ) -> None:
        self.model = model
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
    ) -> float:
        """Predicted latency of a request that runs the head up to ``cut`` and offloads there."""
        return self.model.local_ms(-1, after_exit, load) + self.model.offload_ms(
            cut, codec, rtt_ms, bandwidth_mbps, load
        )

    def best(
        self, rtt_ms: float, bandwidth_mbps: float, edge_load: float = 0.0
    ) -> CutChoice | None:
        """The latency-minimising candidate, ignoring hysteresis (None without candidates)."""
        best: CutChoice | None = None
        for cut, codec, after in self._candidates:
            ms = self.predict(cut, codec, after, rtt_ms, bandwidth_mbps, edge_load)
            if best is None or ms < best.predicted_ms:
                best = CutChoice(cut, codec, after, ms)
        return best

    def select(
        self, rtt_ms: float, bandwidth_mbps: float, edge_load: float = 0.0
    ) -> CutChoice | None:
        """Update and return the current choice for this network estimate."""
        best = self.best(rtt_ms, bandwidth_mbps, edge_load)
        if best is None:
            return None
        cur = self.current
        if cur is None:
            self.current = best
            return best
        cur_ms = self.predict(
            cur.cut_point, cur.codec, cur.after_exit, rtt_ms, bandwidth_mbps, edge_load
        )
        if (best.cut_point, best.codec) != (
            cur.cut_point,
            cur.codec,
        ) and best.predicted_ms < cur_ms * (1.0 - self.hysteresis):
            self.current = best
            self.switches += 1
            log.debug("cut point -> %s/%s (%.2f ms)", best.cut_point, best.codec, best.predicted_ms)
            return best
        self.current = CutChoice(cur.cut_point, cur.codec, cur.after_exit, cur_ms)
        return self.current


__all__ = ["AdaptiveCutSelector", "CutChoice"]
