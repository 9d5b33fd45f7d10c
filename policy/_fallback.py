"""The edge agent's fallback rule: what a device does when its policy fails or answers something
the device cannot carry out. Needs nothing but thresholds and coded sizes, so it always works."""

from __future__ import annotations

from collections.abc import Sequence

from policy._base import ThresholdPolicy
from policy._profile import BundleProfile
from policy._types import Action, Decision, DecisionContext


class FallbackPolicy(ThresholdPolicy):
    """Exit when the calibrated confidence clears the exit's threshold; otherwise offload at the
    latest cut point the device may use when ``RTT + coded bytes / bandwidth + cloud_ms`` (plus
    ``margin_ms``) fits the time left, else continue locally (exit at the last exit). With the
    link down: defer (answer now, features queued) when a replay queue exists, else continue.
    The codec is left to the device (empty ``Decision.codec``). Times in milliseconds."""

    kind = "fallback"

    def __init__(
        self,
        profile: BundleProfile,
        *,
        thresholds: Sequence[float] | None = None,
        cloud_ms: float = 2.0,
        margin_ms: float = 5.0,
        policy_id: str = "edge-fallback",
    ) -> None:
        self._init_thresholds(profile, thresholds)
        self.cloud_ms = cloud_ms
        self.margin_ms = margin_ms
        self.policy_id = policy_id
        self._last = profile.n_exits - 1

    def _offload_cut(self, ctx: DecisionContext) -> str | None:
        """The latest cut point whose features exist at this exit and that the device allows."""
        cuts = [
            c.name
            for c in self.profile.cuts
            if 0 <= c.after_exit <= ctx.exit_index and ctx.may_offload_at(c.name)
        ]
        return cuts[-1] if cuts else None

    def decide(self, ctx: DecisionContext) -> Decision:
        k = min(ctx.exit_index, self._last)
        thr = self.thresholds[k]

        def decision(action: Action, cut: str = "", expected_ms: float = float("nan")) -> Decision:
            return Decision(
                action,
                cut_point=cut,
                threshold=thr,
                expected_latency_ms=expected_ms,
                policy_id=self.policy_id,
                policy_version=self.version,
            )

        onward = Action.CONTINUE_LOCAL if k < self._last else Action.EXIT_LOCAL
        if ctx.confidence >= thr:
            return decision(Action.EXIT_LOCAL)
        cut = self._offload_cut(ctx)
        if not ctx.link_up:
            if ctx.replay_available and cut is not None:
                return decision(Action.DEFER, cut)
            return decision(onward)
        if cut is not None:
            coded = min(c.bytes for c in self.profile.cut(cut).codecs.values())
            expected = ctx.rtt_ms + coded * 8.0 / (ctx.bandwidth_mbps * 1e3) + self.cloud_ms
            if expected + self.margin_ms <= ctx.remaining_ms:
                return decision(Action.OFFLOAD, cut, ctx.elapsed_ms + expected)
        return decision(onward)


__all__ = ["FallbackPolicy"]
