"""What devices run: the served policy per device class, versioned, as a transport-neutral
snapshot (what a PolicyUpdate carries). Sessions subscribe and push every change."""

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


class PolicyPublisher:
    """The served policy per device class. :meth:`publish` gives the policy the next version
    (one counter across classes) and tells every subscriber; :meth:`current` is what a device of a class runs
    now (its class's policy, else the default class's)."""

    def __init__(self, default: Policy | None = None) -> None:
        self._policies: dict[str, Policy] = {}
        self._snapshots: dict[str, PolicySnapshot] = {}
        self._subscribers: list[Subscriber] = []
        self._version = 0
        if default is not None:
            self.publish(default)

    def policy(self, device_class: str = DEFAULT_CLASS) -> Policy | None:
        """The policy devices of ``device_class`` run (None when none is published)."""
        return self._policies.get(device_class) or self._policies.get(DEFAULT_CLASS)

    def current(self, device_class: str = DEFAULT_CLASS) -> PolicySnapshot | None:
        """The snapshot devices of ``device_class`` run (None when none is published)."""
        return self._snapshots.get(device_class) or self._snapshots.get(DEFAULT_CLASS)

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
        for subscriber in list(self._subscribers):
            try:
                subscriber(device_class, snap)
            except Exception:  # one broken session must not stop the others
                log.exception("policy subscriber failed")
        return snap

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Hear of every publish; returns the function that unsubscribes."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe

    def applies(self, published_class: str, device_class: str) -> bool:
        """Whether a publish for ``published_class`` changes what ``device_class`` runs."""
        if published_class == device_class:
            return True
        return published_class == DEFAULT_CLASS and device_class not in self._snapshots


__all__ = ["DEFAULT_CLASS", "PolicyPublisher", "PolicySnapshot", "Subscriber", "snapshot"]
