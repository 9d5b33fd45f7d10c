"""The policy the gateway serves (PolicyService) and pushes to devices (PolicyUpdate).

A policy state or profile in :class:`~policy._settings.PolicySettings` selects it fully.
Otherwise the profile comes from a served bundle's manifest through
:func:`policy.profile_from_manifest` (no measurements in the gateway: every segment counts
1 ms; the exits follow the manifest's calibrated thresholds either way) and ``kind`` (default
``heuristic``) picks the policy.
"""

from __future__ import annotations

import logging
from pathlib import Path

import policy
from policy._settings import PolicySettings  # not re-exported by the policy package

log = logging.getLogger(__name__)


def profile_from_bundle(root: Path) -> policy.BundleProfile:
    """The ``policy.BundleProfile`` of the bundle at ``root`` (from its verified manifest)."""
    from common.bundle import load_bundle

    return policy.profile_from_manifest(load_bundle(root).manifest)


def gateway_policy(
    models_dir: Path, bundle: str = "", settings: PolicySettings | None = None
) -> policy.Policy | None:
    """The policy the gateway serves: from ``settings`` alone when it names a state or profile,
    else a policy of ``settings.kind`` for ``bundle`` (the first bundle in ``models_dir`` when
    empty); None when there is no bundle."""
    st = settings or PolicySettings.model_validate({})
    if st.profile is not None or st.state is not None:
        return st.build()
    bundle = bundle or st.bundle
    candidates = (
        [models_dir / bundle]
        if bundle
        else sorted(p for p in models_dir.iterdir() if (p / "manifest.json").is_file())
        if models_dir.is_dir()
        else []
    )
    for root in candidates:
        try:
            return st.build(profile_from_bundle(root))
        except Exception as exc:
            log.warning("no policy from %s: %s", root, exc)
    return None


__all__ = ["gateway_policy", "profile_from_bundle"]
