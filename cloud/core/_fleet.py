"""What devices report about themselves with their telemetry: the offline replay backlog.

Each device's latest report is kept (bounded: the least recently heard devices go first, and a
device silent for :data:`STALE_S` no longer counts); the gauges hold sums over the devices that
count, by region and device class, so a scrape never lists a device.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from cloud._metrics import GatewayMetrics

STALE_S = 900.0
"""A device whose last report is older than this no longer counts (15 minutes)."""
MAX_DEVICES = 100_000
"""Devices remembered at most (the least recently heard are forgotten first)."""


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """What one telemetry batch says about its device (TelemetryBatch region, device_class,
    replay_backlog), attributed to the verified device id."""

    device_id: str
    region: str = ""
    device_class: str = ""
    replay_backlog: int = 0


class DeviceFleet:
    """Latest report per device, summed into ``aiml021_gateway_device_replay_backlog_requests``
    and ``aiml021_gateway_reporting_devices``."""

    def __init__(
        self, metrics: GatewayMetrics, stale_s: float = STALE_S, max_devices: int = MAX_DEVICES
    ) -> None:
        self._m = metrics
        self.stale_s = stale_s
        self.max_devices = max_devices
        # device -> (labels, backlog, last heard, monotonic)
        self._latest: OrderedDict[str, tuple[tuple[str, str], int, float]] = OrderedDict()
        self._sums: dict[tuple[str, str], list[int]] = {}  # labels -> [backlog, devices]

    def report(self, r: DeviceReport, now: float | None = None) -> None:
        """Take a device's report (replacing its previous one)."""
        now = time.monotonic() if now is None else now
        self.expire(now)
        m = self._m
        labels = (m.region(r.region), m.bounded_label("device_class", r.device_class))
        self._drop(r.device_id)
        self._latest[r.device_id] = (labels, r.replay_backlog, now)
        self._add(labels, r.replay_backlog, 1)
        while len(self._latest) > self.max_devices:
            self._drop(next(iter(self._latest)))

    def expire(self, now: float | None = None) -> None:
        """Forget devices not heard for ``stale_s``."""
        now = time.monotonic() if now is None else now
        while self._latest:
            device, (_, _, heard) = next(iter(self._latest.items()))
            if now - heard < self.stale_s:
                break
            self._drop(device)

    def _drop(self, device: str) -> None:
        old = self._latest.pop(device, None)
        if old is not None:
            self._add(old[0], -old[1], -1)

    def _add(self, labels: tuple[str, str], backlog: int, devices: int) -> None:
        s = self._sums.setdefault(labels, [0, 0])
        s[0] += backlog
        s[1] += devices
        m = self._m
        m.device_replay_backlog.labels(*labels).set(s[0])
        m.reporting_devices.labels(*labels).set(s[1])

    def backlog(self) -> int:
        """Offloads waiting on every device that counts."""
        return sum(s[0] for s in self._sums.values())


__all__ = ["MAX_DEVICES", "STALE_S", "DeviceFleet", "DeviceReport"]
