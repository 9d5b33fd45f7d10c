"""What devices run: the served policy per device class, versioned, as a transport-neutral
snapshot (what a PolicyUpdate carries). Sessions subscribe and push every change.

A class may be *split* (an A/B experiment, :mod:`policy._admin`): an assignment function maps a
device id to one of the split's policies, or to nothing (the class's own policy). Sessions ask
:meth:`PolicyPublisher.current` with their device id, so each device runs its arm's policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from policy._base import Policy
from policy._registry import dumps_state

log = logging.getLogger(__name__)

DEFAULT_CLASS = ""
"""The device class whose policy serves every class without its own."""


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """A policy as devices receive it: per-exit thresholds, an optional pinned cut point and
    codec, and the full serialised state (``dumps_state``) for devices that run it."""

    policy_id: str
    policy_version: int
    kind: str
    exit_thresholds: dict[str, float] = field(default_factory=dict)
    cut_point: str = ""
    codec: str = ""
    state: bytes = b""
    created_at: float = 0.0
    """Unix time, seconds."""


def snapshot(policy: Policy) -> PolicySnapshot:
    """The snapshot of ``policy`` now (thresholds by exit name when it keeps them)."""
    profile = getattr(policy, "profile", None)
    thresholds = getattr(policy, "thresholds", None)
    by_exit: dict[str, float] = {}
    if profile is not None and thresholds is not None:
        by_exit = {e.name: float(t) for e, t in zip(profile.exits, thresholds, strict=True)}
    return PolicySnapshot(
        policy_id=policy.policy_id,
        policy_version=policy.version,
        kind=policy.kind,
        exit_thresholds=by_exit,
        cut_point=getattr(policy, "cut_point", None) or "",
        codec=getattr(policy, "codec", None) or "",
        state=dumps_state(policy),
        created_at=time.time(),
    )


Subscriber = Callable[[str, PolicySnapshot], None]
"""Called with (device class, snapshot) after every publish."""

Assign = Callable[[str], str]
"""Device id -> the name of a split's policy ("" or an unknown name: the class's own policy)."""


@dataclass(slots=True)
class _Split:
    assign: Assign
    policies: dict[str, Policy]
    snapshots: dict[str, PolicySnapshot]


class PolicyPublisher:
    """The served policy per device class. :meth:`publish` gives the policy the next version
    (one counter across classes) and tells every subscriber; :meth:`current` is what a device of a class runs
    now (its class's policy, else the default class's)."""

    def __init__(self, default: Policy | None = None) -> None:
        self._policies: dict[str, Policy] = {}
        self._snapshots: dict[str, PolicySnapshot] = {}
        self._subscribers: list[Subscriber] = []
        self._splits: dict[str, _Split] = {}
        self._version = 0
        if default is not None:
            self.publish(default)

    def _arm(self, device_class: str, device_id: str) -> tuple[_Split, str] | None:
        if not device_id:
            return None
        split = self._splits.get(device_class)
        if split is None and device_class not in self._snapshots:
            split = self._splits.get(DEFAULT_CLASS)  # the class runs the default's policy
        if split is None:
            return None
        arm = split.assign(device_id)
        return (split, arm) if arm in split.policies else None

    def policy(self, device_class: str = DEFAULT_CLASS, device_id: str = "") -> Policy | None:
        """The policy devices of ``device_class`` run (None when none is published); with
        ``device_id``, that device's arm's when the class is split."""
        found = self._arm(device_class, device_id)
        if found is not None:
            return found[0].policies[found[1]]
        return self._policies.get(device_class) or self._policies.get(DEFAULT_CLASS)

    def current(
        self, device_class: str = DEFAULT_CLASS, device_id: str = ""
    ) -> PolicySnapshot | None:
        """The snapshot devices of ``device_class`` run (None when none is published); with
        ``device_id``, that device's arm's when the class is split."""
        found = self._arm(device_class, device_id)
        if found is not None:
            return found[0].snapshots[found[1]]
        return self._snapshots.get(device_class) or self._snapshots.get(DEFAULT_CLASS)

    def split(
        self, device_class: str, assign: Assign, policies: dict[str, Policy]
    ) -> dict[str, PolicySnapshot]:
        """Serve ``policies`` (each under its own new version) to the devices of
        ``device_class`` that ``assign`` maps to them; the rest keep the class's policy.
        Replaces an earlier split of the class. Subscribers hear of it."""
        snaps: dict[str, PolicySnapshot] = {}
        for name, policy in policies.items():
            self._version = max(self._version + 1, policy.version)
            policy.version = self._version
            snaps[name] = snapshot(policy)
        self._splits[device_class] = _Split(assign, dict(policies), snaps)
        for snap in snaps.values():
            self._notify(device_class, snap)
        return snaps

    def unsplit(self, device_class: str) -> None:
        """End the split of ``device_class``: its devices run the class's policy again."""
        if self._splits.pop(device_class, None) is not None:
            self.reassigned(device_class)

    def reassigned(self, device_class: str) -> None:
        """Tell subscribers that devices of ``device_class`` may run another policy now (a
        split's assignment changed, e.g. an arm was stopped)."""
        snap = self.current(device_class)
        if snap is not None:
            self._notify(device_class, snap)

    def _notify(self, device_class: str, snap: PolicySnapshot) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(device_class, snap)
            except Exception:  # one broken session must not stop the others
                log.exception("policy subscriber failed")

    def publish(self, policy: Policy, device_class: str = DEFAULT_CLASS) -> PolicySnapshot:
        """Serve ``policy`` to ``device_class`` (the default class: every class without its
        own) under a version above every earlier publish; subscribers hear of it (at once, in
        this thread: in the gateway, call it on the event loop that runs the sessions)."""
        # One counter for all classes: a (policy id, version) pair names one publish.
        self._version = max(self._version + 1, policy.version)
        policy.version = self._version
        snap = snapshot(policy)
        self._policies[device_class] = policy
        self._snapshots[device_class] = snap
        self._notify(device_class, snap)
        return snap

    def classes(self) -> list[str]:
        """The device classes with a policy of their own (``""`` first when published)."""
        return sorted(self._policies)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hear of every publish; returns the function that unsubscribes."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def applies(self, published_class: str, device_class: str) -> bool:
        """Whether a publish for ``published_class`` may change what ``device_class`` runs
        (a subscriber then asks :meth:`current` with its device id)."""
        if published_class == device_class:
            return True
        return published_class == DEFAULT_CLASS and device_class not in self._snapshots


__all__ = ["DEFAULT_CLASS", "Assign", "PolicyPublisher", "PolicySnapshot", "Subscriber", "snapshot"]
