"""A/B experiments: deterministic assignment of devices to arms by a hash of (experiment, device
id), per-arm metrics, and a guardrail that stops an arm whose accuracy falls below, or whose SLA
breach rate rises above, a bound once it has enough samples."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from common.errors import InvalidArgument

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ArmMetrics:
    """Running per-arm outcome counts."""

    requests: int = 0
    correct: int = 0
    breaches: int = 0
    latency_ms_sum: float = 0.0
    cost_sum: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.requests if self.requests else math.nan

    @property
    def breach_rate(self) -> float:
        return self.breaches / self.requests if self.requests else math.nan

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_sum / self.requests if self.requests else math.nan

    def as_dict(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "accuracy": self.accuracy,
            "breach_rate": self.breach_rate,
            "mean_latency_ms": self.mean_latency_ms,
            "mean_cost": self.cost_sum / self.requests if self.requests else math.nan,
        }


@dataclass(frozen=True, slots=True)
class Guardrail:
    """Stop an arm when, after ``min_requests``, its accuracy is below ``min_accuracy`` or its
    SLA breach rate above ``max_breach_rate``."""

    min_accuracy: float = 0.0
    max_breach_rate: float = 1.0
    min_requests: int = 200

    def violated(self, m: ArmMetrics) -> str | None:
        if m.requests < self.min_requests:
            return None
        if m.accuracy < self.min_accuracy:
            return f"accuracy {m.accuracy:.4f} < {self.min_accuracy:.4f}"
        if m.breach_rate > self.max_breach_rate:
            return f"SLA breach rate {m.breach_rate:.4f} > {self.max_breach_rate:.4f}"
        return None


@dataclass
class Experiment:
    """An A/B(/n) experiment. ``arms`` maps arm name to traffic weight; ``control`` is where
    devices of a stopped arm go. Assignment depends only on (name, device id)."""

    name: str
    arms: Mapping[str, float]
    control: str
    guardrail: Guardrail = field(default_factory=Guardrail)
    metrics: dict[str, ArmMetrics] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.arms or any(w < 0 for w in self.arms.values()) or sum(self.arms.values()) <= 0:
            raise InvalidArgument(f"experiment {self.name!r}: arms need non-negative weights")
        if self.control not in self.arms:
            raise InvalidArgument(f"experiment {self.name!r}: control {self.control!r} is no arm")
        self._names = sorted(self.arms)
        total = sum(self.arms.values())
        acc = 0.0
        self._bounds = []
        for name in self._names:
            acc += self.arms[name] / total
            self._bounds.append(acc)
        for name in self._names:
            self.metrics.setdefault(name, ArmMetrics())

    def bucket(self, device_id: str) -> float:
        """A uniform number in [0, 1) fixed by the experiment name and device id."""
        digest = hashlib.sha256(f"{self.name}\x00{device_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2.0**64

    def assigned_arm(self, device_id: str) -> str:
        """The arm the hash assigns, ignoring stops (stable across processes and restarts)."""
        u = self.bucket(device_id)
        for name, bound in zip(self._names, self._bounds, strict=True):
            if u < bound:
                return name
        return self._names[-1]

    def assign(self, device_id: str) -> str:
        """The arm that serves ``device_id`` now (control if its arm was stopped)."""
        arm = self.assigned_arm(device_id)
        return self.control if arm in self.stopped else arm

    def record(
        self, arm: str, *, correct: bool, latency_ms: float, deadline_ms: float, cost: float = 0.0
    ) -> None:
        """Add one outcome to ``arm`` and apply the guardrail."""
        m = self.metrics[arm]
        m.requests += 1
        m.correct += int(correct)
        m.breaches += int(latency_ms > deadline_ms)
        m.latency_ms_sum += latency_ms
        m.cost_sum += cost
        if arm != self.control and arm not in self.stopped:
            reason = self.guardrail.violated(m)
            if reason is not None:
                self.stopped[arm] = reason
                log.warning("experiment %s: stopped arm %s: %s", self.name, arm, reason)

    def report(self) -> dict[str, dict[str, float | str]]:
        return {
            name: {**m.as_dict(), "stopped": self.stopped.get(name, "")}
            for name, m in self.metrics.items()
        }


__all__ = ["ArmMetrics", "Experiment", "Guardrail"]
