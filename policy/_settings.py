"""Settings of the policy engine (env prefix ``AIML021_POLICY_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from common.errors import InvalidArgument
from policy._base import Policy
from policy._profile import BundleProfile
from policy._registry import KINDS, make_policy, policy_from_state


class PolicySettings(BaseSettings):
    """Which policy a device or the gateway runs, and from what."""

    model_config = SettingsConfigDict(env_prefix="AIML021_POLICY_", extra="forbid")

    kind: str = "heuristic"
    """Policy kind: heuristic, static, linucb, thompson or dqn."""
    profile: Path | None = None
    """Policy profile JSON (``BundleProfile.to_dict`` format, e.g. from a trace)."""
    state: Path | None = None
    """Serialised policy state (``dumps_state`` output); overrides ``kind`` and ``profile``."""
    epsilon: float = Field(0.0, ge=0.0, le=1.0)
    """Exploration rate of learned policies."""

    def build(self) -> Policy:
        """The configured policy; errors name the setting."""
        if self.state is not None:
            try:
                return policy_from_state(self.state.read_bytes())
            except OSError as exc:
                raise InvalidArgument(
                    f"AIML021_POLICY_STATE: cannot read {self.state}: {exc}"
                ) from exc
        if self.kind not in KINDS:
            raise InvalidArgument(
                f"AIML021_POLICY_KIND: unknown kind {self.kind!r}; known: {', '.join(KINDS)}"
            )
        if self.profile is None:
            raise InvalidArgument(
                "AIML021_POLICY_PROFILE: required unless AIML021_POLICY_STATE is set"
            )
        profile = BundleProfile.load(self.profile)
        kwargs = {"epsilon": self.epsilon} if self.kind in ("linucb", "thompson", "dqn") else {}
        return make_policy(self.kind, profile, **kwargs)


__all__ = ["PolicySettings"]
