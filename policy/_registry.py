"""Build policies by kind and restore them from a serialised state (a PolicyUpdate's payload)."""

from __future__ import annotations

import json
from typing import Any

from common.errors import InvalidArgument
from policy._bandits import LinUCBPolicy, ThompsonPolicy
from policy._base import Policy
from policy._dqn import DQNPolicy
from policy._heuristic import HeuristicPolicy, StaticThresholdPolicy
from policy._profile import BundleProfile

KINDS = ("heuristic", "static", "linucb", "thompson", "dqn")


def make_policy(kind: str, profile: BundleProfile, **kwargs: Any) -> Policy:
    """A fresh policy of ``kind`` for ``profile``."""
    if kind == "heuristic":
        return HeuristicPolicy(profile, **kwargs)
    if kind == "static":
        kwargs.setdefault("thresholds", [e.threshold for e in profile.exits])
        kwargs.setdefault("cut_point", profile.cuts[0].name if profile.cuts else None)
        return StaticThresholdPolicy(profile, **kwargs)
    if kind == "linucb":
        return LinUCBPolicy(profile, **kwargs)
    if kind == "thompson":
        return ThompsonPolicy(profile, **kwargs)
    if kind == "dqn":
        return DQNPolicy(profile, **kwargs)
    raise InvalidArgument(f"policy: unknown kind {kind!r}; known: {', '.join(KINDS)}")


def dumps_state(policy: Policy) -> bytes:
    """The policy's state as compact JSON bytes (PolicyUpdate.state)."""
    return json.dumps(policy.state_dict(), separators=(",", ":")).encode()


def policy_from_state(
    state: dict[str, Any] | bytes, profile: BundleProfile | None = None
) -> Policy:
    """Rebuild a policy from :func:`dumps_state` output (or its dict)."""
    if isinstance(state, bytes | bytearray):
        try:
            state = json.loads(state)
        except ValueError as exc:
            raise InvalidArgument(f"policy: state is not JSON: {exc}") from exc
    assert isinstance(state, dict)
    kind = str(state.get("kind", ""))
    if profile is None:
        if "profile" not in state:
            raise InvalidArgument(f"policy: state of kind {kind!r} carries no profile")
        profile = BundleProfile.from_dict(state["profile"])
    kwargs: dict[str, Any] = {}
    if kind == "static":
        kwargs = {
            "thresholds": state["thresholds"],
            "cut_point": state.get("cut_point"),
            "codec": state.get("codec"),
        }
    elif kind == "dqn" and "hidden" in state:
        kwargs = {"hidden": int(state["hidden"])}
    if kind in ("linucb", "thompson", "dqn"):
        kwargs["hint"] = bool(state.get("hint", False))
    policy = make_policy(kind, profile, **kwargs)
    policy.load_state(state)
    return policy


__all__ = ["KINDS", "dumps_state", "make_policy", "policy_from_state"]
