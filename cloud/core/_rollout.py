"""Canary and shadow rollouts of model versions, with automatic rollback (transport-free).

- **Canary**: a share ``traffic_fraction`` of requests is answered by the candidate version. The
  choice hashes a routing key (request id, or device id) so it is deterministic and sticky; a
  request without one uses a seeded RNG.
- **Shadow**: the stable version answers; for a share of requests a copy runs on the candidate in
  the background. Its result is compared (top-class agreement, latency delta) and never returned.
- **Rollback**: once the candidate has served ``min_requests`` and its error rate exceeds
  ``max_error_rate``, the rollout is ``ROLLED_BACK`` and all traffic goes to the stable version.

Only requests that name no version are subject to rollouts; an explicit version is served as is.
:class:`RolloutManager` holds the rollouts and decides; ``cloud.core.RolloutRouter`` applies them
in front of the data plane. A rollout is as visible as its model: a principal that may not see
the model (``cloud.core.ModelRepository.visible``) can neither read, set nor steer its rollout,
and is answered as for a model without one.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cloud.core._principal import refused_model
from cloud.core._types import InferenceResult
from common.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)


class RolloutMode(enum.Enum):
    """How the candidate gets traffic."""

    NONE = "none"
    CANARY = "canary"
    SHADOW = "shadow"


class RolloutState(enum.Enum):
    """Where a rollout stands."""

    ACTIVE = "active"
    ROLLED_BACK = "rolled_back"
    PROMOTED = "promoted"


@dataclass(frozen=True)
class RollbackPolicy:
    """Roll back when the candidate's error rate exceeds ``max_error_rate`` over at least
    ``min_requests`` candidate requests."""

    max_error_rate: float = 0.05
    min_requests: int = 20


@dataclass(frozen=True)
class Rollout:
    """A rollout of ``candidate_version`` next to ``stable_version`` of one model."""

    model_name: str
    stable_version: str
    candidate_version: str = ""
    mode: RolloutMode = RolloutMode.NONE
    traffic_fraction: float = 0.0
    rollback: RollbackPolicy = field(default_factory=RollbackPolicy)
    state: RolloutState = RolloutState.ACTIVE
    updated_at: float = field(default_factory=time.time)


@dataclass
class RolloutStats:
    """Measured behaviour of a rollout so far."""

    candidate_requests: int = 0
    candidate_errors: int = 0
    shadow_comparisons: int = 0
    shadow_agreements: int = 0
    stable_latency_s: float = 0.0
    stable_requests: int = 0
    candidate_latency_s: float = 0.0

    @property
    def shadow_agreement(self) -> float:
        """Share of shadow copies whose top class agreed with the stable answer."""
        return self.shadow_agreements / self.shadow_comparisons if self.shadow_comparisons else 0.0

    @property
    def latency_delta_ms(self) -> float:
        """Mean candidate latency minus mean stable latency, in milliseconds."""
        ok = self.candidate_requests - self.candidate_errors
        if not ok or not self.stable_requests:
            return 0.0
        return 1000.0 * (
            self.candidate_latency_s / ok - self.stable_latency_s / self.stable_requests
        )


@dataclass(frozen=True)
class VersionChoice:
    """Version answering a request, and the version of its shadow copy (if any)."""

    version: str
    shadow_version: str = ""
    candidate: bool = False


def hash_fraction(model_name: str, routing_key: str) -> float:
    """A uniform, deterministic number in [0, 1) for ``routing_key``."""
    digest = hashlib.sha256(f"{model_name}\x00{routing_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def top_classes(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """Argmax over the last axis of the first output (the logits of a classifier)."""
    first = next(iter(outputs.values()))
    return np.asarray(first).reshape(first.shape[0], -1).argmax(axis=1)


class RolloutManager:
    """Holds one rollout per model, chooses the version of each request and decides rollbacks.

    ``has_version(name, version)`` says whether a version is served (checked by :meth:`set`);
    ``visible(name)`` whether the current principal may see the model (default: every model).
    """

    def __init__(
        self,
        has_version: Callable[[str, str], bool],
        seed: int = 0,
        *,
        visible: Callable[[str], bool] | None = None,
    ) -> None:
        self._has_version = has_version
        self._visible = visible or (lambda name: True)
        self._rollouts: dict[str, Rollout] = {}
        self._stats: dict[str, RolloutStats] = {}
        self._rng = random.Random(seed)

    def set(self, rollout: Rollout) -> Rollout:
        """Start, change or end (mode NONE, or state PROMOTED) the rollout of a model."""
        r = rollout
        if not r.model_name:
            raise InvalidArgument("rollout.model_name is required")
        # Another tenant's model: refused as if unknown, with the same checks (and words) as a
        # model that does not exist, so the answer tells nothing about it.
        self._visible_or_refused(r.model_name)
        if not 0.0 <= r.traffic_fraction <= 1.0:
            raise InvalidArgument(
                f"rollout.traffic_fraction must be in [0, 1], got {r.traffic_fraction}"
            )
        if not 0.0 <= r.rollback.max_error_rate <= 1.0:
            raise InvalidArgument("rollout.rollback.max_error_rate must be in [0, 1]")
        if not r.stable_version:
            raise InvalidArgument("rollout.stable_version is required")
        versions = [r.stable_version] + (
            [r.candidate_version] if r.mode is not RolloutMode.NONE else []
        )
        if r.mode is not RolloutMode.NONE and not r.candidate_version:
            raise InvalidArgument(f"rollout mode {r.mode.value} needs candidate_version")
        if r.mode is not RolloutMode.NONE and r.candidate_version == r.stable_version:
            raise InvalidArgument("candidate_version must differ from stable_version")
        for v in versions:
            if not self._has_version(r.model_name, v):
                raise NotFound(f"model {r.model_name!r} has no served version {v!r}")
        if r.state is RolloutState.ROLLED_BACK:
            raise InvalidArgument(
                "a rollout cannot be set to ROLLED_BACK; the gateway decides that"
            )
        if r.state is RolloutState.PROMOTED and r.mode is not RolloutMode.NONE:
            # Promotion: the candidate becomes the stable version for all traffic.
            r = dataclasses.replace(
                r, stable_version=r.candidate_version, mode=RolloutMode.NONE, traffic_fraction=0.0
            )
        r = dataclasses.replace(r, updated_at=time.time())
        self._rollouts[r.model_name] = r
        self._stats[r.model_name] = RolloutStats()
        log.info("rollout of %s: %s", r.model_name, r)
        return r

    def rollouts(self) -> list[Rollout]:
        """Every rollout set, one per model."""
        return list(self._rollouts.values())

    def adopt(self, rollout: Rollout) -> bool:
        """Install, as is (``updated_at`` and state kept), a rollout another gateway process set
        or decided (rollouts shared over Redis); this process's stats of it start over. False
        (and nothing changes) when a version it names is not served here."""
        r = rollout
        versions = [r.stable_version] + ([r.candidate_version] if r.candidate_version else [])
        missing = [v for v in versions if not self._has_version(r.model_name, v)]
        if missing:
            log.warning("shared rollout of %s names unserved versions %s", r.model_name, missing)
            return False
        if self._rollouts.get(r.model_name) != r:
            self._rollouts[r.model_name] = r
            self._stats[r.model_name] = RolloutStats()
            log.info("rollout of %s adopted: %s", r.model_name, r)
        return True

    def _visible_or_refused(self, model_name: str) -> bool:
        if self._visible(model_name):
            return True
        refused_model(model_name)
        return False

    def get(self, model_name: str) -> tuple[Rollout, RolloutStats]:
        """The rollout of ``model_name`` and its stats (NotFound when none was set, or the
        current principal may not see the model)."""
        r = self._rollouts.get(model_name)
        if not self._visible_or_refused(model_name) or r is None:
            raise NotFound(f"no rollout set for model {model_name!r}")
        return r, self._stats[model_name]

    def stable_version(self, model_name: str) -> str:
        """The stable version of ``model_name``'s rollout ("" when none was set)."""
        r = self._rollouts.get(model_name)
        return r.stable_version if r is not None else ""

    def choose(self, model_name: str, routing_key: str = "") -> VersionChoice | None:
        """The version that answers a request for ``model_name`` (no explicit version); None when
        no rollout applies: none is set, or the current principal may not see the model (its
        request is not routed, so it neither reaches a candidate nor counts towards a rollback)."""
        r = self._rollouts.get(model_name)
        if r is None or not self._visible(model_name):
            return None
        active = r.state is RolloutState.ACTIVE and r.mode is not RolloutMode.NONE
        if not active:
            return VersionChoice(r.stable_version)
        u = hash_fraction(model_name, routing_key) if routing_key else self._rng.random()
        chosen = u < r.traffic_fraction
        if r.mode is RolloutMode.CANARY:
            return VersionChoice(
                r.candidate_version if chosen else r.stable_version, candidate=chosen
            )
        return VersionChoice(r.stable_version, shadow_version=r.candidate_version if chosen else "")

    def record_stable(self, model_name: str, latency_s: float) -> None:
        """Count a stable-version answer (latency baseline)."""
        s = self._stats.get(model_name)
        if s is not None:
            s.stable_requests += 1
            s.stable_latency_s += latency_s

    def record_candidate(self, model_name: str, ok: bool, latency_s: float = 0.0) -> None:
        """Count a candidate answer (canary) or copy (shadow); may trigger a rollback."""
        s = self._stats.get(model_name)
        r = self._rollouts.get(model_name)
        if s is None or r is None:
            return
        s.candidate_requests += 1
        if ok:
            s.candidate_latency_s += latency_s
        else:
            s.candidate_errors += 1
        p = r.rollback
        if (
            r.state is RolloutState.ACTIVE
            and s.candidate_requests >= max(1, p.min_requests)
            and s.candidate_errors / s.candidate_requests > p.max_error_rate
        ):
            self._rollouts[model_name] = dataclasses.replace(
                r, state=RolloutState.ROLLED_BACK, updated_at=time.time()
            )
            log.warning(
                "rolled back %s candidate %s: %d errors in %d requests (bound %.3f)",
                model_name, r.candidate_version, s.candidate_errors, s.candidate_requests,
                p.max_error_rate,
            )  # fmt: skip

    def record_shadow(
        self, model_name: str, stable: InferenceResult, shadow: InferenceResult, latency_s: float
    ) -> None:
        """Compare a shadow copy with the stable answer."""
        s = self._stats.get(model_name)
        if s is None:
            return
        agree = bool(np.array_equal(top_classes(stable.outputs), top_classes(shadow.outputs)))
        s.shadow_comparisons += 1
        s.shadow_agreements += int(agree)
        self.record_candidate(model_name, True, latency_s)


__all__ = [
    "RollbackPolicy",
    "Rollout",
    "RolloutManager",
    "RolloutMode",
    "RolloutState",
    "RolloutStats",
    "VersionChoice",
    "hash_fraction",
    "top_classes",
]
