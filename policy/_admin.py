"""What operators change in the served policy, with its guardrails: the configuration of each
device class, and A/B experiments that split a class between the policy it runs (control) and a
candidate (treatment).

Every change goes through :class:`policy.PolicyPublisher` — sessions push the new policy to the
devices it concerns; :class:`policy.OnlineLearner` decides with it (``route``) and reports each
outcome here (``observe``), which is how an experiment's per-arm results fill: outcomes reported
for decisions of a device of the class (PolicyService ``ReportOutcome``: correctness, latency,
cost), credited to the arm whose policy decided. Device telemetry carries no correctness, so
decisions a device makes on its own do not count.

Guardrails: numbers bounded and kinds known (:func:`policy.parse_config`); ``expected_version``
refuses an edit made against a version that is no longer served; a class under a running
experiment cannot be edited; at most ``max_classes`` classes and ``max_experiments`` kept
experiments; publishes (edits, experiment starts) share a token bucket, stopping never waits; an
experiment's guardrail (minimum accuracy, maximum SLA-breach rate after ``min_requests``) ends
it and sends the treatment's devices back to the control policy.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from policy._base import Policy
from policy._config import bounded, describe, parse_config
from policy._experiments import Experiment, Guardrail
from policy._learning import ReportedOutcome
from policy._profile import BundleProfile
from policy._publish import DEFAULT_CLASS, PolicyPublisher
from policy._types import Decision, DecisionContext

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CONTROL, TREATMENT = "control", "treatment"


class PublishRate:
    """A token bucket over publishes: ``burst`` at once, then one per ``1 / per_s`` seconds."""

    def __init__(
        self, burst: int = 20, per_s: float = 0.5, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst, self.per_s, self._clock = burst, per_s, clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> None:
        """Spend one publish, or RESOURCE_EXHAUSTED saying when the next one is possible."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.per_s)
        self._at = now
        if self._tokens < 1.0:
            wait = (1.0 - self._tokens) / self.per_s
            raise ResourceExhausted(
                f"too many policy changes: at most {self.burst} at once, then one every "
                f"{1 / self.per_s:g} s; retry in {wait:.1f} s"
            )
        self._tokens -= 1.0


def _class_name(value: Any, where: str = "device_class") -> str:
    if value is None or value == DEFAULT_CLASS:
        return DEFAULT_CLASS
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise InvalidArgument(
            f'{where}: "" (every class without its own policy) or 1-64 letters, digits, ".", '
            '"_" or "-", starting with a letter or digit'
        )
    return value


def _fields(doc: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise InvalidArgument("body: must be a JSON object")
    unknown = sorted(str(k)[:64] for k in set(doc) - set(allowed))
    if unknown:
        raise InvalidArgument(f"{unknown[0]}: unknown field; fields: {', '.join(allowed)}")
    return doc


def _finite(values: dict[str, float | int | str]) -> dict[str, Any]:
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in values.items()
    }


@dataclass
class _Record:
    experiment: Experiment
    device_class: str
    split: float
    control: Policy
    treatment: Policy
    created_by: str
    created_at: float = field(default_factory=time.time)
    stopped_at: float | None = None
    stopped_by: str = ""
    reason: str = ""

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def as_dict(self) -> dict[str, Any]:
        g = self.experiment.guardrail
        return {
            "name": self.experiment.name,
            "device_class": self.device_class,
            "state": "running" if self.running else "stopped",
            "split": self.split,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "stopped_at": self.stopped_at,
            "stopped_by": self.stopped_by,
            "reason": self.reason,
            "guardrail": {
                "min_accuracy": g.min_accuracy,
                "max_breach_rate": g.max_breach_rate,
                "min_requests": g.min_requests,
            },
            "arms": {
                arm: {
                    **describe(policy),
                    "policy_id": policy.policy_id,
                    "policy_version": policy.version,
                    "share": self.split if arm == TREATMENT else 1.0 - self.split,
                    "results": _finite(self.experiment.report()[arm]),
                }
                for arm, policy in ((CONTROL, self.control), (TREATMENT, self.treatment))
            },
        }


class PolicyAdmin:
    """Per-class configurations and A/B experiments over one :class:`PolicyPublisher` (call
    it on the event loop that runs the sessions, like the publisher)."""

    def __init__(
        self,
        publisher: PolicyPublisher,
        *,
        max_classes: int = 64,
        max_experiments: int = 100,
        rate: PublishRate | None = None,
    ) -> None:
        self.publisher = publisher
        self.max_classes = max_classes
        self.max_experiments = max_experiments
        self.rate = rate or PublishRate()
        self._experiments: dict[str, _Record] = {}

    # -- configurations ------------------------------------------------------------------------

    def _served(self, device_class: str) -> tuple[Policy, BundleProfile]:
        policy = self.publisher.policy(device_class)
        profile = getattr(policy, "profile", None)
        if policy is None or not isinstance(profile, BundleProfile):
            raise FailedPrecondition(
                "no policy is served: the gateway found no bundle to derive a profile from"
            )
        return policy, profile

    def _running(self, device_class: str) -> _Record | None:
        return next(
            (r for r in self._experiments.values() if r.running and r.device_class == device_class),
            None,
        )

    def profile(self) -> dict[str, Any]:
        """The exits (name, calibrated threshold) and cut points (name, codecs) configurations
        name — those of the bundle the served policy was built for (empty when none is)."""
        policy = self.publisher.policy()
        profile = getattr(policy, "profile", None)
        if not isinstance(profile, BundleProfile):
            return {"exits": [], "cut_points": []}
        return {
            "exits": [{"name": e.name, "threshold": e.threshold} for e in profile.exits],
            "cut_points": [{"name": c.name, "codecs": list(c.codecs)} for c in profile.cuts],
        }

    def configs(self) -> list[dict[str, Any]]:
        """What each class with its own policy runs (``""``: every other class)."""
        out = []
        for device_class in self.publisher.classes():
            snap = self.publisher.current(device_class)
            policy = self.publisher.policy(device_class)
            assert snap is not None and policy is not None
            running = self._running(device_class)
            out.append(
                {
                    "device_class": device_class,
                    **describe(policy),
                    "policy_id": snap.policy_id,
                    "policy_version": snap.policy_version,
                    "published_at": snap.created_at,
                    "experiment": running.experiment.name if running else None,
                }
            )
        return out

    def configure(self, doc: Any) -> dict[str, Any]:
        """Validate ``{"device_class", "kind", "thresholds", "params", "expected_version"}`` and
        serve it to the class (devices of the class are pushed the new version)."""
        doc = dict(
            _fields(doc, ("device_class", "kind", "thresholds", "params", "expected_version"))
        )
        device_class = _class_name(doc.pop("device_class", DEFAULT_CLASS))
        expected = doc.pop("expected_version", None)
        if expected is not None:
            bounded("expected_version", expected, 0, 2**53, integer=True)
        served, profile = self._served(device_class)
        config = parse_config(doc, profile, describe(served)["thresholds"])
        own = (
            self.publisher.current(device_class)
            if device_class in self.publisher.classes()
            else None
        )
        if expected is not None and expected != (own.policy_version if own else 0):
            raise FailedPrecondition(
                f"expected_version: device class {device_class!r} runs version "
                f"{own.policy_version if own else 0} now, not {expected}; reload and retry"
            )
        running = self._running(device_class)
        if running is not None:
            raise FailedPrecondition(
                f"device class {device_class!r} is under experiment {running.experiment.name!r}; "
                "stop it first"
            )
        if own is None and len(self.publisher.classes()) >= self.max_classes:
            raise ResourceExhausted(
                f"at most {self.max_classes} device classes have their own policy"
            )
        self.rate.take()
        policy = config.build(profile, policy_id=config.kind)
        self.publisher.publish(policy, device_class)
        log.info("policy of class %r: %s v%d", device_class, config.kind, policy.version)
        return next(c for c in self.configs() if c["device_class"] == device_class)

    # -- experiments ---------------------------------------------------------------------------

    def experiments(self) -> list[dict[str, Any]]:
        """Every kept experiment, newest first, with per-arm results."""
        return [
            r.as_dict() for r in sorted(self._experiments.values(), key=lambda r: -r.created_at)
        ]

    def experiment(self, name: str) -> dict[str, Any]:
        record = self._experiments.get(name)
        if record is None:
            raise NotFound(f"no experiment {name[:64]!r}")
        return record.as_dict()

    def create(self, doc: Any, actor: str = "") -> dict[str, Any]:
        """Start an experiment: ``{"name", "device_class", "treatment": {config}, "split",
        "guardrail": {"min_accuracy", "max_breach_rate", "min_requests"}}``; ``split`` is the
        share of the class's devices (by a hash of their id) that run the treatment."""
        doc = _fields(doc, ("name", "device_class", "treatment", "split", "guardrail"))
        name = doc.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise InvalidArgument(
                'name: 1-64 letters, digits, ".", "_" or "-", starting with a letter or digit'
            )
        device_class = _class_name(doc.get("device_class", DEFAULT_CLASS))
        split = bounded("split", doc.get("split", 0.5), 0.01, 0.99)
        g = doc.get("guardrail") or {}
        if not isinstance(g, dict):
            raise InvalidArgument("guardrail: must be an object")
        g = _fields(g, ("min_accuracy", "max_breach_rate", "min_requests"))
        guardrail = Guardrail(
            min_accuracy=bounded("guardrail.min_accuracy", g.get("min_accuracy", 0.0), 0.0, 1.0),
            max_breach_rate=bounded(
                "guardrail.max_breach_rate", g.get("max_breach_rate", 1.0), 0.0, 1.0
            ),
            min_requests=int(
                bounded("guardrail.min_requests", g.get("min_requests", 200), 1, 1e6, integer=True)
            ),
        )
        control, profile = self._served(device_class)
        if "treatment" not in doc:
            raise InvalidArgument("treatment: required (the configuration to try)")
        config = parse_config(
            doc["treatment"], profile, describe(control)["thresholds"], "treatment"
        )
        if name in self._experiments:
            raise AlreadyExists(f"name: experiment {name!r} exists; choose another name")
        running = self._running(device_class)
        if running is not None:
            raise FailedPrecondition(
                f"device class {device_class!r} is already under experiment "
                f"{running.experiment.name!r}; stop it first"
            )
        if len(self._experiments) >= self.max_experiments:
            stopped = [r for r in self._experiments.values() if not r.running]
            if not stopped:
                raise ResourceExhausted(
                    f"at most {self.max_experiments} experiments; stop one first"
                )
            oldest = min(stopped, key=lambda r: r.stopped_at or 0.0)
            del self._experiments[oldest.experiment.name]
        self.rate.take()
        treatment = config.build(profile, policy_id=f"{config.kind}/{name}")
        experiment = Experiment(
            name, {CONTROL: 1.0 - split, TREATMENT: split}, control=CONTROL, guardrail=guardrail
        )
        record = _Record(experiment, device_class, split, control, treatment, actor)
        self._experiments[name] = record

        def assign(device_id: str) -> str:
            return TREATMENT if record.running and experiment.assign(device_id) == TREATMENT else ""

        self.publisher.split(device_class, assign, {TREATMENT: treatment})
        log.info(
            "experiment %s on class %r: %s at %.0f%%", name, device_class, config.kind, split * 100
        )
        return record.as_dict()

    def stop(
        self, name: str, actor: str = "", reason: str = "stopped by an operator"
    ) -> dict[str, Any]:
        """End an experiment (never rate-limited): every device of the class runs the class's
        policy again; the results stay listed. Stopping a stopped one changes nothing."""
        record = self._experiments.get(name)
        if record is None:
            raise NotFound(f"no experiment {name[:64]!r}")
        if record.running:
            record.stopped_at, record.stopped_by, record.reason = time.time(), actor, reason
            self.publisher.unsplit(record.device_class)
            log.info("experiment %s stopped: %s", name, reason)
        return record.as_dict()

    def observe(
        self, ctx: DecisionContext, decision: Decision, policy: Policy, reported: ReportedOutcome
    ) -> None:
        """An outcome of a decision (:attr:`OnlineLearner.observers`): recorded on the arm whose
        policy decided, for a device of a class under experiment."""
        if not ctx.device_id:
            return
        running = [r for r in self._experiments.values() if r.running]
        # the class's own experiment before the default class's (which covers it only when the
        # class has no policy of its own)
        running.sort(key=lambda r: r.device_class != ctx.device_class)
        for record in running:
            if policy is record.treatment:
                arm = TREATMENT
            elif policy is record.control and self.publisher.applies(
                record.device_class, ctx.device_class
            ):
                arm = CONTROL
            else:
                continue
            record.experiment.record(
                arm,
                correct=reported.correct,
                latency_ms=reported.latency_ms,
                deadline_ms=ctx.deadline_ms + ctx.elapsed_ms,
                cost=reported.cloud_cost,
            )
            if TREATMENT in record.experiment.stopped:
                self.stop(
                    record.experiment.name,
                    "guardrail",
                    f"guardrail: {record.experiment.stopped[TREATMENT]}",
                )
            return


__all__ = ["PolicyAdmin", "PublishRate"]
