"""Protobuf <-> core types for the registry, deploy and cache services (pb2 stops here; the REST
bridge uses them too for its proto3-JSON bodies)."""

from __future__ import annotations

import numpy as np
from aiml021.cache.v1 import cache_pb2
from aiml021.common.v1 import tensor_pb2
from aiml021.deploy.v1 import deploy_pb2
from aiml021.registry.v1 import registry_pb2

from cloud.core import (
    CacheEntry,
    ModelInfo,
    RollbackPolicy,
    Rollout,
    RolloutMode,
    RolloutState,
    RolloutStats,
    TensorSpec,
)
from common.dtypes import dtype_from_proto, dtype_to_proto
from common.errors import InvalidArgument
from common.prototime import timestamp_from_s, timestamp_to_s
from common.tensors import from_raw, to_raw

_MODE_TO_PB = {
    RolloutMode.NONE: deploy_pb2.ROLLOUT_MODE_NONE,
    RolloutMode.CANARY: deploy_pb2.ROLLOUT_MODE_CANARY,
    RolloutMode.SHADOW: deploy_pb2.ROLLOUT_MODE_SHADOW,
}
_MODE_FROM_PB = {v: k for k, v in _MODE_TO_PB.items()}
_STATE_TO_PB = {
    RolloutState.ACTIVE: deploy_pb2.ROLLOUT_STATE_ACTIVE,
    RolloutState.ROLLED_BACK: deploy_pb2.ROLLOUT_STATE_ROLLED_BACK,
    RolloutState.PROMOTED: deploy_pb2.ROLLOUT_STATE_PROMOTED,
}
_STATE_FROM_PB = {v: k for k, v in _STATE_TO_PB.items()}


def _tensor_spec(t: TensorSpec) -> tensor_pb2.TensorSpec:
    return tensor_pb2.TensorSpec(name=t.name, dtype=dtype_to_proto(t.dtype), shape=list(t.shape))  # type: ignore[arg-type]


def model_to_pb(m: ModelInfo) -> registry_pb2.Model:
    """Registry Model message of ``m``."""
    out = registry_pb2.Model(name=m.name, default_version=m.default_version)
    for v in m.versions:
        mv = out.versions.add(
            version=v.version,
            state=registry_pb2.VERSION_STATE_READY
            if v.ready
            else registry_pb2.VERSION_STATE_LOADING,
            manifest_sha256=v.manifest_sha256,
        )
        mv.inputs.extend(_tensor_spec(t) for t in v.inputs)
        mv.outputs.extend(_tensor_spec(t) for t in v.outputs)
        for c in v.cut_points:
            cp = mv.cut_points.add(
                name=c.name,
                index=c.index,
                shape=list(c.shape),
                activation_bytes_float32=c.activation_bytes_float32,
            )
            if c.default_codec:
                cp.default_codec.text = c.default_codec
        for e in v.exits:
            mv.exits.add(
                name=e.name,
                index=e.index,
                logits_tensor=e.logits_tensor,
                temperature=e.temperature,
                threshold=e.threshold,
            )
    return out


def rollout_from_pb(msg: deploy_pb2.Rollout) -> Rollout:
    """Core rollout of a SetRollout request (UNSPECIFIED enums rejected)."""
    if msg.mode not in _MODE_FROM_PB:
        raise InvalidArgument("rollout.mode is required (ROLLOUT_MODE_NONE, _CANARY or _SHADOW)")
    state = RolloutState.ACTIVE
    if msg.state != deploy_pb2.ROLLOUT_STATE_UNSPECIFIED:
        state = _STATE_FROM_PB.get(msg.state, RolloutState.ACTIVE)
    policy = RollbackPolicy()
    if msg.HasField("rollback"):
        policy = RollbackPolicy(msg.rollback.max_error_rate, msg.rollback.min_requests)
    return Rollout(
        model_name=msg.model_name,
        stable_version=msg.stable_version,
        candidate_version=msg.candidate_version,
        mode=_MODE_FROM_PB[msg.mode],
        traffic_fraction=msg.traffic_fraction,
        rollback=policy,
        state=state,
    )


def rollout_to_pb(r: Rollout) -> deploy_pb2.Rollout:
    """Rollout message of ``r``."""
    ts = timestamp_from_s(r.updated_at)
    return deploy_pb2.Rollout(
        model_name=r.model_name,
        stable_version=r.stable_version,
        candidate_version=r.candidate_version,
        mode=_MODE_TO_PB[r.mode],
        traffic_fraction=r.traffic_fraction,
        rollback=deploy_pb2.RollbackPolicy(
            max_error_rate=r.rollback.max_error_rate, min_requests=r.rollback.min_requests
        ),
        state=_STATE_TO_PB[r.state],
        updated_at=ts,
    )


def stats_to_pb(s: RolloutStats) -> deploy_pb2.RolloutStats:
    """RolloutStats message of ``s``."""
    return deploy_pb2.RolloutStats(
        candidate_requests=s.candidate_requests,
        candidate_errors=s.candidate_errors,
        shadow_comparisons=s.shadow_comparisons,
        shadow_agreement=s.shadow_agreement,
        latency_delta_ms=s.latency_delta_ms,
    )


def cache_entry_from_pb(msg: cache_pb2.CacheEntry, max_bytes: int) -> CacheEntry:
    """Core cache entry of a Put request (raw tensors only; size checked before copying)."""
    outputs: dict[str, np.ndarray] = {}
    total = 0
    for t in msg.outputs:
        if t.HasField("encoding"):
            raise InvalidArgument(
                f"cache output {t.name!r}: store decoded tensors, not codec frames"
            )
        total += len(t.contents)
        if total > max_bytes:
            raise InvalidArgument(f"cache entry larger than {max_bytes} bytes")
        if not t.name or t.name in outputs:
            raise InvalidArgument("cache outputs need unique, non-empty names")
        outputs[t.name] = from_raw(dtype_from_proto(t.dtype), list(t.shape), t.contents)
    stored = timestamp_to_s(msg.stored_at) if msg.HasField("stored_at") else 0.0
    entry = CacheEntry(outputs, msg.top_class, msg.confidence, msg.model_version)
    return (
        entry
        if not stored
        else CacheEntry(outputs, msg.top_class, msg.confidence, msg.model_version, stored)
    )


def cache_entry_to_pb(e: CacheEntry) -> cache_pb2.CacheEntry:
    """CacheEntry message of ``e``."""
    ts = timestamp_from_s(e.stored_at)
    out = cache_pb2.CacheEntry(
        top_class=e.top_class, confidence=e.confidence, model_version=e.model_version, stored_at=ts
    )
    for name, arr in e.outputs.items():
        out.outputs.add(
            name=name, dtype=dtype_to_proto(arr.dtype), shape=list(arr.shape), contents=to_raw(arr)
        )
    return out


__all__ = [
    "cache_entry_from_pb",
    "cache_entry_to_pb",
    "model_to_pb",
    "rollout_from_pb",
    "rollout_to_pb",
    "stats_to_pb",
]
