"""The device's policy: the ``policy`` package's types and policies, with a profile measured on
this device and a guard that never lets a policy fault or an impossible answer fail inference.

The agent builds a :class:`policy.DecisionContext` (milliseconds, Mbit/s) and asks any
:class:`policy.Policy`; there is no edge-side copy of the vocabulary and no unit conversion.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

import policy
from edge_agent._features import encode_features, entropy_models, model_for

if TYPE_CHECKING:
    from edge_agent._runtime import EdgeRuntime

log = logging.getLogger(__name__)


def _zero_input(runtime: EdgeRuntime) -> np.ndarray:
    shape = [1, *(int(d or 1) for d in runtime.bundle.manifest.input.shape[1:])]
    return np.zeros(shape, np.float32)


def _segment_ms(runtime: EdgeRuntime, repeats: int = 5) -> dict[str, float]:
    """Median wall time of each chain segment on a zero input, measured here, milliseconds."""
    x = _zero_input(runtime)
    times: dict[str, list[float]] = {name: [] for name in runtime.chain}
    for _ in range(repeats):
        state = runtime.start(x)
        for name in runtime.chain:
            t = time.perf_counter()
            runtime.step(state)
            times[name].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def device_profile(runtime: EdgeRuntime, codec_for: dict[str, str]) -> policy.BundleProfile:
    """The bundle's profile on this device: compute measured now, and per cut the coded size of
    one real activation with the codec the device uses there."""
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


def default_policy(profile: policy.BundleProfile) -> policy.HeuristicPolicy:
    """The heuristic on the device's own measured profile (no slowdown factor)."""
    model = policy.LatencyModel(profile, edge_slowdown=1.0)
    return policy.HeuristicPolicy(profile, latency_model=model)


def guarded_decide(
    chosen: policy.Policy, fallback: policy.Policy, ctx: policy.DecisionContext
) -> policy.Decision:
    """``chosen``'s decision, or ``fallback``'s when ``chosen`` raises or wants to offload where
    the device cannot (link down, or a cut point it may not use now)."""
    try:
        decision = chosen.decide(ctx)
    except Exception as exc:  # a policy fault must never fail inference
        log.warning("policy %s failed (%s); using the fallback rule", chosen.policy_id, exc)
        return fallback.decide(ctx)
    if decision.action is policy.Action.OFFLOAD and not (
        ctx.link_up and ctx.may_offload_at(decision.cut_point)
    ):
        return fallback.decide(ctx)
    return decision


__all__ = ["default_policy", "device_profile", "guarded_decide"]
