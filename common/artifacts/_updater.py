"""The device side of bundles in object storage: follow the bundle assigned to the device's
class, download and verify it, swap it in only once it proved it runs, and fall back to the last
known good bundle when a new one fails.

Directory ``root`` (the device's own)::

    versions/<name>-<version>/   installed bundles (verified: signature, then manifest hashes)
    current -> versions/...      what the agent runs (a symlink, replaced atomically)
    state.json                   {"current": ..., "last_good": ..., "bad": [...]} (versions dirs)

:meth:`BundleUpdater.check` installs the assigned bundle when it differs from the current one
and runs the ``probe`` on it (by default :func:`probe_bundle`: every edge segment on a zero input
through onnxruntime). Only a bundle that verified *and* passed the probe becomes ``current``; the
previous one is kept as ``last_good``. A bundle that fails is marked bad and never retried (until
the assignment names another version). :meth:`BundleUpdater.report_failure` is for a bundle that
passed the probe but fails in service: it goes back to ``last_good``.

The agent re-reads ``current`` (``on_swap`` callback) to pick the new bundle up without a restart
of the device process; requests in flight finish on the bundle they started with.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from common.artifacts._store import ArtifactStore, BundleRef
from common.bundle import load_bundle
from common.errors import AimlError, Unavailable

log = logging.getLogger(__name__)


def probe_bundle(path: Path) -> None:
    """Raise unless the bundle at ``path`` loads (hashes checked) and each edge segment runs on
    zero inputs (dynamic dimensions as 1) with finite outputs."""
    bundle = load_bundle(path, verify=True)
    m = bundle.manifest
    for name in m.edge_chain:
        session = bundle.session(name)
        feeds = {
            i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
            for i in session.get_inputs()
        }
        for out in session.run(None, feeds):
            if not np.all(np.isfinite(out)):
                raise ValueError(f"segment {name} of {m.name} {m.version} gives non-finite outputs")


@dataclass
class UpdateResult:
    """What one :meth:`BundleUpdater.check` did."""

    assigned: BundleRef | None
    swapped: bool = False
    current: str = ""
    error: str = ""


@dataclass
class BundleUpdater:
    """Keeps ``root/current`` on the bundle assigned to ``device_class`` (see module doc)."""

    store: ArtifactStore
    verify_key: Ed25519PublicKey
    device_class: str
    root: Path
    probe: Callable[[Path], None] = probe_bundle
    on_swap: Callable[[Path], None] | None = None
    max_bytes: int = 2 << 30
    """Largest archive downloaded and unpacked (a larger one is refused unread)."""
    _state: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        (self.root / "versions").mkdir(parents=True, exist_ok=True)
        path = self.root / "state.json"
        self._state = json.loads(path.read_text()) if path.exists() else {"bad": []}

    @property
    def current(self) -> Path | None:
        """The bundle directory the agent runs (None before the first successful update)."""
        link = self.root / "current"
        return link.resolve() if link.exists() else None

    @property
    def last_good(self) -> str:
        return str(self._state.get("last_good", ""))

    def _bad(self) -> list[str]:
        return list(self._state.get("bad", []))  # type: ignore[call-overload]

    def _save(self) -> None:
        tmp = self.root / "state.json.tmp"
        tmp.write_text(json.dumps(self._state))
        tmp.replace(self.root / "state.json")

    def _point(self, dirname: str) -> None:
        tmp = self.root / "current.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(Path("versions") / dirname)
        os.replace(tmp, self.root / "current")  # atomic: readers see the old or the new bundle
        previous = str(self._state.get("current", ""))
        # a bundle rolled back from is never the one to go back to
        if previous and previous != dirname and previous not in self._bad():
            self._state["last_good"] = previous
        self._state["current"] = dirname
        self._save()
        if self.on_swap is not None:
            self.on_swap(self.root / "current")

    def check(self) -> UpdateResult:
        """Follow the assignment once (see module doc)."""
        ref = self.store.assignment(self.device_class)
        result = UpdateResult(ref, current=str(self._state.get("current", "")))
        if ref is None:
            return result
        dirname = f"{ref.name}-{ref.version}"
        bad = self._bad()
        if dirname == result.current or dirname in bad:
            if dirname in bad:
                result.error = f"{dirname} failed before; staying on {result.current or 'nothing'}"
            return result
        target = self.root / "versions" / dirname
        try:
            if not target.exists():
                self.store.install(ref, self.verify_key, target, self.max_bytes)
            self.probe(target)
        except Unavailable as exc:  # storage unreachable: not the bundle's fault, try again
            log.warning("bundle %s not fetched, staying on %s: %s", dirname, result.current, exc)
            result.error = f"{dirname}: {exc}"
            return result
        except (AimlError, Exception) as exc:  # any failure: the current bundle stays
            log.error("bundle %s rejected, staying on %s: %s", dirname, result.current, exc)
            self._state["bad"] = [*bad, dirname]
            self._save()
            result.error = f"{dirname}: {exc}"
            return result
        self._point(dirname)
        log.info("bundle swapped to %s (last good %s)", dirname, self.last_good)
        result.swapped, result.current = True, dirname
        return result

    @property
    def bad(self) -> list[str]:
        """Bundles (``<name>-<version>``) refused or rolled back from, never retried."""
        return self._bad()

    def report_failure(self, why: str, retry: bool = False) -> str:
        """The current bundle fails in service: mark it bad (unless ``retry``: the failure was
        not the bundle's, the next :meth:`check` may take it again), go back to the last known
        good one; returns the bundle now current ("" when there is none to go back to: the
        ``current`` link is removed, the device runs the bundle it shipped with)."""
        current = str(self._state.get("current", ""))
        good = self.last_good
        log.error("bundle %s failed in service (%s); rolling back to %s", current, why, good)
        bad = self._bad()
        if current and current not in bad and not retry:
            self._state["bad"] = [*bad, current]
        if not good:
            (self.root / "current").unlink(missing_ok=True)
            self._state["current"] = ""
            self._save()
            return ""
        self._state["last_good"] = ""
        self._point(good)
        if retry:  # the bundle left is no proven one to come back to
            self._state["last_good"] = ""
            self._save()
        return good


__all__ = ["BundleUpdater", "UpdateResult", "probe_bundle"]
