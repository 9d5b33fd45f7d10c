"""Bridge to the policy engine (package ``policy``): builds the engine's BundleProfile from the
bundle and timings measured on this device, and adapts the engine's DecisionContext/Decision to
the agent's RoutingContext/RoutingDecision."""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_agent._features import encode_features, entropy_models, model_for
from edge_agent._routing import (
    Action,
    RoutingContext,
    RoutingDecision,
    RoutingPolicy,
    ThresholdRouting,
)

if TYPE_CHECKING:
    from edge_agent._runtime import EdgeRuntime

log = logging.getLogger(__name__)


def _zero_input(runtime: EdgeRuntime) -> np.ndarray:
    shape = [1, *(int(d or 1) for d in runtime.bundle.manifest.input.shape[1:])]
    return np.zeros(shape, np.float32)


def _segment_ms(runtime: EdgeRuntime, repeats: int = 5) -> dict[str, float]:
    """Median wall time of each chain segment on a zero input, measured here."""
    x = _zero_input(runtime)
    times: dict[str, list[float]] = {name: [] for name in runtime.chain}
    for _ in range(repeats):
        state = runtime.start(x)
        for name in runtime.chain:
            t = time.perf_counter()
            runtime.step(state)
            times[name].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def bundle_profile(runtime: EdgeRuntime, codec_for: dict[str, str]) -> Any:
    """The engine's ``BundleProfile`` for this bundle on this device (compute measured now;
    codec sizes from encoding one real activation of each cut)."""
    import policy

    state = runtime.start(_zero_input(runtime))
    models = entropy_models(runtime.bundle)
    runtime.run_to_end(state)
    codecs = {}
    for cut in runtime.bundle.cut_points:
        codec = codec_for.get(cut.name, "raw")
        model = model_for(models, cut.name, codec)
        size = len(encode_features(state.tensors[cut.name], codec, model).payload)
        codecs[cut.name] = {codec: policy.CodecCost(bytes=size)}
    return policy.profile_from_manifest(
        runtime.bundle.manifest, segment_ms=_segment_ms(runtime), codecs=codecs
    )


class PolicyEngineAdapter:
    """Runs a ``policy.Policy`` for the agent; an engine fault or an answer the agent cannot
    carry out (offload while offline, an unknown cut) falls back to :class:`ThresholdRouting`."""

    def __init__(self, engine: Any, exit_names: list[str] | None = None) -> None:
        self.engine = engine
        self.exit_names = exit_names or []
        self._fallback = ThresholdRouting()

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        """Apply per-exit thresholds from a PolicyUpdate to engines that keep them."""
        current = getattr(self.engine, "thresholds", None)
        if not isinstance(current, list) or len(current) != len(self.exit_names):
            return
        self.engine.thresholds = [
            float(thresholds.get(name, old))
            for name, old in zip(self.exit_names, current, strict=True)
        ]

    def decide(self, ctx: RoutingContext) -> RoutingDecision:
        import policy

        try:
            decision = self.engine.decide(
                policy.DecisionContext(
                    exit_index=ctx.exit_index,
                    confidences=tuple(ctx.exit_confidences),
                    entropy=ctx.entropy,
                    rtt_ms=ctx.rtt_s * 1e3,
                    bandwidth_mbps=ctx.bandwidth_bps / 1e6 if ctx.connected else 0.0,
                    edge_load=ctx.edge_load,
                    deadline_ms=max(ctx.deadline_s, 0.0) * 1e3,
                    elapsed_ms=0.0,
                    device_class=ctx.device_class or "default",
                    device_id=ctx.device_id,
                )
            )
            action = Action[decision.action.name]
        except Exception as exc:  # an engine fault must never fail inference
            log.warning("policy engine failed (%s); using the threshold rule", exc)
            return self._fallback.decide(ctx)
        cuts = {c.name: c for c in ctx.cuts}
        cut = decision.cut_point or ""
        if action is Action.OFFLOAD and (not ctx.connected or cut not in cuts):
            return self._fallback.decide(ctx)
        if action is Action.CONTINUE_LOCAL and not ctx.can_continue:
            return self._fallback.decide(ctx)
        thr = decision.threshold
        latency = decision.expected_latency_ms
        return RoutingDecision(
            action,
            cut_point=cut,
            codec=decision.codec or (cuts[cut].codec if cut in cuts else ""),
            threshold=0.0 if math.isnan(thr) else float(thr),
            expected_latency_s=0.0 if math.isnan(latency) else latency / 1e3,
            policy_id=decision.policy_id or self.engine.kind,
            policy_version=str(decision.policy_version),
            propensity=float(decision.propensity),
        )


def engine_heuristic(runtime: EdgeRuntime, codec_for: dict[str, str]) -> RoutingPolicy:
    """The engine's HeuristicPolicy for this bundle (device-measured profile, no slowdown),
    or :class:`ThresholdRouting` when the engine is not installed or cannot be built."""
    try:
        import policy

        profile = bundle_profile(runtime, codec_for)
        model = policy.LatencyModel(profile, edge_slowdown=1.0)
        engine = policy.HeuristicPolicy(profile, latency_model=model)
        return PolicyEngineAdapter(engine, [e.name for e in runtime.exits])
    except Exception as exc:
        log.warning("policy engine heuristic unavailable (%s); using the threshold rule", exc)
        return ThresholdRouting()


__all__ = ["PolicyEngineAdapter", "bundle_profile", "engine_heuristic"]
