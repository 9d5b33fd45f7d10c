"""Settings of differential privacy on offloaded features (the edge's section ``privacy``):
off by default; one default, overridden per organisation, then per model."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from common.settings import Section

from ._dp import GaussianMechanism


class DpOverride(Section):
    """Fields that replace the defaults for one organisation or one model (unset: inherited)."""

    enabled: bool | None = None
    """Turn DP on or off for this organisation or model."""
    epsilon: float | None = Field(default=None, gt=0)
    """ε of each release."""
    delta: float | None = Field(default=None, gt=0, lt=1)
    """δ of each release."""
    clip_norm: float | None = Field(default=None, gt=0)
    """L2 clipping norm of every cut point without its own."""
    cut_clip_norm: dict[str, float] = Field(default_factory=dict)
    """Cut point -> L2 clipping norm (merged over the inherited table)."""


class FeaturePrivacySettings(Section):
    """Differential privacy on the features a device offloads (Gaussian mechanism, per-request
    L2 clipping) and the device's privacy budget. Off unless ``enabled`` (or an override) says so.
    """

    enabled: bool = False
    """Clip and noise features before they are coded and sent (or queued for replay)."""
    epsilon: float = Field(default=4.0, gt=0)
    """ε of one release (one offloaded request); smaller is more private and less accurate."""
    delta: float = Field(default=1e-5, gt=0, lt=1)
    """δ of one release, and the δ at which the accountant reports ε spent."""
    clip_norm: float | None = Field(default=None, gt=0)
    """L2 norm each request's features are clipped to (the scale of the noise is proportional to
    it); required when DP is on for a cut point without an entry in ``cut_clip_norm``. Pick it
    near the median feature norm (docs/privacy.md lists the reference bundles' values)."""
    cut_clip_norm: dict[str, float] = Field(default_factory=dict)
    """Cut point -> L2 clipping norm, for bundles whose cut points differ in scale."""
    budget_epsilon: float | None = Field(default=None, gt=0)
    """Most ε a device may spend over its lifetime (composed by the RDP accountant); past it the
    device answers locally. None: no limit (ε spent is still accounted and reported)."""
    accountant_path: Path | None = None
    """File keeping the device's privacy ledger across restarts; None keeps it in memory."""
    org: str = ""
    """The organisation this device belongs to (selects an entry of ``orgs``)."""
    orgs: dict[str, DpOverride] = Field(default_factory=dict)
    """Organisation -> overrides of the defaults above."""
    models: dict[str, DpOverride] = Field(default_factory=dict)
    """Model name -> overrides (applied after the organisation's)."""

    @model_validator(mode="after")
    def _check(self) -> FeaturePrivacySettings:
        for scope, table in (("orgs", self.orgs), ("models", self.models)):
            for name, o in table.items():
                for cut, norm in o.cut_clip_norm.items():
                    if not norm > 0:
                        raise ValueError(f"privacy.{scope}.{name}.cut_clip_norm.{cut} must be > 0")
        for cut, norm in self.cut_clip_norm.items():
            if not norm > 0:
                raise ValueError(f"privacy.cut_clip_norm.{cut} must be > 0")
        return self

    def mechanisms(self, model: str, cuts: list[str]) -> dict[str, GaussianMechanism]:
        """Cut point -> mechanism for ``model`` on this device's org; empty when DP is off.
        Raises ValueError naming the setting when a cut point has no clipping norm."""
        enabled, eps, delta = self.enabled, self.epsilon, self.delta
        clip, per_cut = self.clip_norm, dict(self.cut_clip_norm)
        for o in (self.orgs.get(self.org), self.models.get(model)):
            if o is None:
                continue
            enabled = o.enabled if o.enabled is not None else enabled
            eps = o.epsilon or eps
            delta = o.delta or delta
            clip = o.clip_norm or clip
            per_cut.update(o.cut_clip_norm)
        if not enabled:
            return {}
        out = {}
        for cut in cuts:
            norm = per_cut.get(cut, clip)
            if norm is None:
                raise ValueError(
                    f"privacy is enabled for model {model!r} but cut point {cut!r} has no "
                    "clipping norm: set privacy.clip_norm or privacy.cut_clip_norm"
                )
            out[cut] = GaussianMechanism(eps, delta, norm)
        return out


__all__ = ["DpOverride", "FeaturePrivacySettings"]
