"""Settings of the policy engine: a section of a settings tree (the gateway's ``policy``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator

from common.errors import InvalidArgument
from common.settings import Section
from policy._base import Policy
from policy._profile import BundleProfile
from policy._registry import KINDS, make_policy, policy_from_state

LEARNED_KINDS = ("linucb", "thompson", "dqn")
"""Kinds that explore (and so take ``epsilon``)."""


class PolicySettings(Section):
    """Which policy runs, and from what: ``state`` > ``profile`` > the bundle's manifest."""

    kind: str = "heuristic"
    """Policy kind: heuristic, static, linucb, thompson or dqn."""
    profile: Path | None = None
    """Policy profile JSON (``BundleProfile.to_dict`` format, e.g. from a trace); unset: the
    profile is derived from the bundle's manifest."""
    state: Path | None = None
    """Serialised policy state (``dumps_state`` output); overrides ``kind`` and ``profile``."""
    epsilon: float = Field(default=0.0, ge=0.0, le=1.0)
    """Exploration rate of learned policies."""
    bundle: str = ""
    """Bundle whose manifest gives the profile when neither ``profile`` nor ``state`` is set
    (empty: the first bundle served)."""

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        return kind

    def build(self, profile: BundleProfile | None = None) -> Policy:
        """The configured policy; ``profile`` is used when neither ``state`` nor ``profile`` is
        set. Errors name the setting."""
        if self.state is not None:
            try:
                return policy_from_state(self.state.read_bytes())
            except OSError as exc:
                raise InvalidArgument(f"policy.state: cannot read {self.state}: {exc}") from exc
        if self.profile is not None:
            profile = BundleProfile.load(self.profile)
        if profile is None:
            raise InvalidArgument("policy.profile: required unless policy.state is set")
        kwargs = {"epsilon": self.epsilon} if self.kind in LEARNED_KINDS else {}
        return make_policy(self.kind, profile, **kwargs)


__all__ = ["LEARNED_KINDS", "PolicySettings"]
