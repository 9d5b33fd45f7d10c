"""A policy configuration as operators edit it: a kind, its bounded parameters and per-exit
thresholds, validated against the bundle profile with errors that name the field, built into a
policy, and read back from any served policy (:func:`describe`).

What each kind takes (``PARAMS``; every number bounded, NaN and infinities refused):

* ``heuristic`` — ``accuracy_budget`` (points a cut/codec may cost), ``hysteresis``; thresholds.
* ``static`` — ``cut_point`` and ``codec`` (of that cut; empty: never offload); thresholds.
* ``linucb`` — ``epsilon``, ``alpha`` (exploration bonus), ``ridge``, ``hint``.
* ``thompson`` — ``epsilon``, ``v`` (posterior scale), ``ridge``, ``hint``.
* ``dqn`` — ``epsilon``, ``hidden`` (units per layer), ``lr``, ``gamma``, ``hint``.

Learned kinds keep no exit thresholds (they learn when to exit); a new configuration of a learned
kind starts untrained.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import InvalidArgument
from policy._base import Policy, ThresholdPolicy
from policy._manifest import DISABLED_EXIT_THRESHOLD
from policy._profile import BundleProfile
from policy._registry import KINDS, make_policy

THRESHOLD_KINDS = ("heuristic", "static")
"""Kinds that keep one confidence threshold per exit (what devices apply from a PolicyUpdate)."""


@dataclass(frozen=True, slots=True)
class Param:
    """One numeric (or boolean) parameter of a kind: bounds, default, where the policy keeps it."""

    low: float
    high: float
    default: float
    attr: str
    """Attribute path on the built policy (``net.lr``) that :func:`describe` reads."""
    integer: bool = False
    boolean: bool = False
    help: str = ""

    def as_dict(self) -> dict[str, Any]:
        kind = "boolean" if self.boolean else "integer" if self.integer else "number"
        return {
            "type": kind,
            "minimum": self.low,
            "maximum": self.high,
            "default": self.default,
            "help": self.help,
        }


_EPS = Param(0.0, 1.0, 0.0, "epsilon", help="share of decisions that explore at random")
_RIDGE = Param(1e-3, 1e3, 1.0, "ridge", help="ridge regularisation of each arm's regression")
_HINT = Param(0, 1, 0, "hint", boolean=True, help="the heuristic's choice as one more feature")
PARAMS: dict[str, dict[str, Param]] = {
    "heuristic": {
        "accuracy_budget": Param(
            0.0, 100.0, 0.5, "selector.accuracy_budget",
            help="accuracy points a cut point and codec may cost",
        ),
        "hysteresis": Param(
            0.0, 1.0, 0.15, "selector.hysteresis",
            help="relative gain before the cut point changes",
        ),
    },
    "static": {},
    "linucb": {
        "epsilon": _EPS,
        "alpha": Param(0.0, 10.0, 0.5, "alpha", help="weight of the confidence bonus"),
        "ridge": _RIDGE,
        "hint": _HINT,
    },
    "thompson": {
        "epsilon": _EPS,
        "v": Param(1e-3, 10.0, 0.3, "v", help="scale of the posterior samples"),
        "ridge": _RIDGE,
        "hint": _HINT,
    },
    "dqn": {
        "epsilon": Param(0.0, 1.0, 0.05, "epsilon", help="share of decisions that explore"),
        "hidden": Param(4, 256, 64, "hidden", integer=True, help="units per hidden layer"),
        "lr": Param(1e-6, 1.0, 1e-3, "net.lr", help="Adam learning rate"),
        "gamma": Param(0.0, 1.0, 1.0, "gamma", help="discount between exits"),
        "hint": _HINT,
    },
}  # fmt: skip
"""Kind -> its numeric parameters (``static`` takes the strings ``cut_point`` and ``codec``)."""
STATIC_PARAMS = ("cut_point", "codec")
MAX_NAME_CHARS = 64


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    """A validated configuration: build it with :meth:`build`."""

    kind: str
    thresholds: dict[str, float] = field(default_factory=dict)
    """Exit name -> confidence threshold (threshold kinds only)."""
    params: dict[str, Any] = field(default_factory=dict)

    def build(self, profile: BundleProfile, policy_id: str) -> Policy:
        """A fresh policy of this configuration for ``profile``."""
        kwargs: dict[str, Any] = {"policy_id": policy_id}
        for name, value in self.params.items():
            if name in STATIC_PARAMS:
                kwargs[name] = value or None
            else:
                spec = PARAMS[self.kind][name]
                kwargs[name] = bool(value) if spec.boolean else value
        if self.kind in THRESHOLD_KINDS:
            kwargs["thresholds"] = [self.thresholds[e.name] for e in profile.exits]
        return make_policy(self.kind, profile, **kwargs)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "thresholds": dict(self.thresholds), "params": dict(self.params)}


def bounded(where: str, value: Any, low: float, high: float, integer: bool = False) -> float:
    """``value`` as a finite number in [low, high] (an int when ``integer``), else
    INVALID_ARGUMENT naming ``where``; booleans are not numbers."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgument(f"{where}: must be a number in [{low:g}, {high:g}]")
    if integer and (isinstance(value, float) and not value.is_integer()):
        raise InvalidArgument(f"{where}: must be an integer in [{low:g}, {high:g}]")
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidArgument(f"{where}: must be a finite number in [{low:g}, {high:g}]")
    return int(value) if integer else float(value)


def _thresholds(
    doc: Any, kind: str, profile: BundleProfile, base: Mapping[str, float], where: str
) -> dict[str, float]:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{where}: must be an object of exit name -> threshold")
    if doc and kind not in THRESHOLD_KINDS:
        raise InvalidArgument(
            f"{where}: kind {kind!r} keeps no exit thresholds (it learns when to exit); "
            f"only {' and '.join(THRESHOLD_KINDS)} take them"
        )
    if kind not in THRESHOLD_KINDS:
        return {}
    names = [e.name for e in profile.exits]
    unknown = sorted(str(k) for k in doc if k not in names)
    if unknown:
        raise InvalidArgument(
            f"{where}.{unknown[0][:MAX_NAME_CHARS]}: no such exit; exits: {', '.join(names)}"
        )
    out = {}
    for e in profile.exits:
        if e.name in doc:
            out[e.name] = bounded(f"{where}.{e.name}", doc[e.name], 0.0, DISABLED_EXIT_THRESHOLD)
        else:  # unchanged: what the class runs now, else the calibrated threshold
            out[e.name] = float(base.get(e.name, e.threshold))
    return out


def _static_params(doc: dict[str, Any], profile: BundleProfile, where: str) -> dict[str, Any]:
    cut = doc.get("cut_point", "")
    codec = doc.get("codec", "")
    if not isinstance(cut, str) or not isinstance(codec, str):
        raise InvalidArgument(f"{where}.cut_point and {where}.codec: must be strings")
    cuts = {c.name: c for c in profile.cuts}
    if cut and cut not in cuts:
        raise InvalidArgument(
            f"{where}.cut_point: no such cut point; cut points: {', '.join(cuts) or 'none'}"
        )
    if codec and (not cut or codec not in cuts[cut].codecs):
        known = ", ".join(cuts[cut].codecs) if cut else "none without a cut point"
        raise InvalidArgument(f"{where}.codec: not a codec of this cut point; codecs: {known}")
    return {"cut_point": cut, "codec": codec}


def parse_config(
    doc: Any,
    profile: BundleProfile,
    base_thresholds: Mapping[str, float] | None = None,
    where: str = "",
) -> PolicyConfig:
    """Validate ``doc`` (``{"kind", "thresholds", "params"}``) against ``profile``; exits it
    leaves out keep ``base_thresholds`` (else the calibrated ones), parameters it leaves out
    take their defaults. Errors are INVALID_ARGUMENT naming the field (``where`` prefixes it)."""
    at = f"{where}." if where else ""
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{where or 'body'}: must be a JSON object")
    unknown = sorted(str(k)[:MAX_NAME_CHARS] for k in set(doc) - {"kind", "thresholds", "params"})
    if unknown:
        raise InvalidArgument(f"{at}{unknown[0]}: unknown field; fields: kind, thresholds, params")
    kind = doc.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise InvalidArgument(f"{at}kind: must be one of {', '.join(KINDS)}")
    thresholds = _thresholds(
        doc.get("thresholds"), kind, profile, base_thresholds or {}, f"{at}thresholds"
    )
    raw = doc.get("params") or {}
    if not isinstance(raw, dict):
        raise InvalidArgument(f"{at}params: must be an object of name -> value")
    known = STATIC_PARAMS if kind == "static" else tuple(PARAMS[kind])
    extra = sorted(str(k)[:MAX_NAME_CHARS] for k in set(raw) - set(known))
    if extra:
        raise InvalidArgument(
            f"{at}params.{extra[0]}: not a parameter of {kind}; "
            f"parameters: {', '.join(known) or 'none'}"
        )
    if kind == "static":
        return PolicyConfig(kind, thresholds, _static_params(raw, profile, f"{at}params"))
    params: dict[str, Any] = {}
    for name, spec in PARAMS[kind].items():
        value = raw.get(name, spec.default)
        if spec.boolean:
            if name in raw and not isinstance(value, bool):
                raise InvalidArgument(f"{at}params.{name}: must be true or false")
            params[name] = bool(value)
        else:
            params[name] = bounded(f"{at}params.{name}", value, spec.low, spec.high, spec.integer)
    return PolicyConfig(kind, thresholds, params)


def _attr(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def describe(policy: Policy) -> dict[str, Any]:
    """The configuration a served policy runs (kind, thresholds by exit, parameters), read from
    the policy itself: the one the gateway started with reads the same as one set by an operator."""
    thresholds: dict[str, float] = {}
    if isinstance(policy, ThresholdPolicy):
        thresholds = {
            e.name: float(t) for e, t in zip(policy.profile.exits, policy.thresholds, strict=True)
        }
    params: dict[str, Any] = {}
    if policy.kind == "static":
        params = {
            "cut_point": _attr(policy, "cut_point") or "",
            "codec": _attr(policy, "codec") or "",
        }
    for name, spec in PARAMS.get(policy.kind, {}).items():
        value = _attr(policy, spec.attr)
        if spec.boolean:
            params[name] = value is not None and value is not False
        elif isinstance(value, int | float) and not isinstance(value, bool):
            params[name] = int(value) if spec.integer else float(value)
    return {"kind": policy.kind, "thresholds": thresholds, "params": params}


def kinds_schema() -> dict[str, Any]:
    """What the console needs to draw the editor: per kind, its parameters and bounds."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        params = {name: spec.as_dict() for name, spec in PARAMS[kind].items()}
        if kind == "static":
            params = {name: {"type": "string"} for name in STATIC_PARAMS}
        out[kind] = {
            "thresholds": kind in THRESHOLD_KINDS,
            "params": params,
        }
    return {"kinds": out, "threshold_range": [0.0, DISABLED_EXIT_THRESHOLD]}


__all__ = [
    "PARAMS",
    "THRESHOLD_KINDS",
    "Param",
    "PolicyConfig",
    "bounded",
    "describe",
    "kinds_schema",
    "parse_config",
]
