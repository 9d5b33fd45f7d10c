"""The policy the gateway serves (PolicyService): the heuristic built from a served bundle.

The profile comes from ``AIML021_POLICY_PROFILE``/``AIML021_POLICY_STATE`` when set (see
docs/policy.md); otherwise it is derived from the bundle's manifest: exits with their calibrated
thresholds and temperatures, cut points after the exit that shares their last head segment,
with the raw float32 activation size as the one codec. Compute times are not in a manifest; each
segment is taken as ``segment_ms`` (the heuristic's exits follow the thresholds either way).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def profile_from_bundle(root: Path, segment_ms: float = 1.0) -> Any:
    """A ``policy.BundleProfile`` of the bundle at ``root`` (from its manifest)."""
    import policy
    from common.bundle import load_bundle

    m = load_bundle(root).manifest
    chain = list(m.edge_chain)
    exits = []
    prev = -1
    for ex in sorted(m.exits, key=lambda e: e.index):
        pos = chain.index(ex.segment) if ex.segment in chain else prev + 1
        exits.append(
            policy.ExitSpec(
                name=ex.name,
                segment_ms=segment_ms * max(1, pos - prev),
                threshold=ex.threshold if ex.threshold is not None else 1.0,
                temperature=ex.temperature,
            )
        )
        prev = pos
    exit_pos = [chain.index(e.segment) if e.segment in chain else -1 for e in m.exits]
    cuts = []
    for cut in m.cut_points:
        pos = chain.index(cut.head[-1]) if cut.head and cut.head[-1] in chain else -1
        after = max((i for i, p in enumerate(exit_pos) if 0 <= p <= pos), default=-1)
        size = int(cut.float32_bytes or 0) or 1
        cuts.append(
            policy.CutSpec(
                name=cut.name,
                after_exit=after,
                tail_ms=segment_ms * max(1, len(chain) - 1 - pos),
                codecs={"raw": policy.CodecCost(bytes=size)},
            )
        )
    return policy.BundleProfile(model=m.name, exits=tuple(exits), cuts=tuple(cuts))


def gateway_policy(models_dir: Path, bundle: str = "") -> Any | None:
    """The policy PolicyService serves: ``AIML021_POLICY_*`` when a profile or state is set,
    else the heuristic for ``bundle`` (the first bundle in ``models_dir`` when empty); None when
    there is no bundle."""
    import policy

    if os.environ.get("AIML021_POLICY_PROFILE") or os.environ.get("AIML021_POLICY_STATE"):
        from policy._settings import PolicySettings  # not re-exported by the policy package

        return PolicySettings().build()  # type: ignore[call-arg]  # fields come from env
    candidates = (
        [models_dir / bundle]
        if bundle
        else sorted(p for p in models_dir.iterdir() if (p / "manifest.json").is_file())
        if models_dir.is_dir()
        else []
    )
    for root in candidates:
        try:
            return policy.HeuristicPolicy(profile_from_bundle(root))
        except Exception as exc:
            log.warning("no policy from %s: %s", root, exc)
    return None


__all__ = ["gateway_policy", "profile_from_bundle"]
