"""Per-device quotas and each device's fair share of the gateway's buffer budget.

Identity is the device id the transport established (the client certificate); every session of
one device draws on one :class:`DeviceLedger`, so opening more streams buys a device nothing.
:class:`DeviceQuotas` (one per gateway) holds the ledgers and refuses, with RESOURCE_EXHAUSTED
naming the limit, a device that would exceed:

- ``max_sessions`` streams open at once;
- ``max_inflight`` requests open over all its sessions (reassembling, queued or computing);
- ``max_buffered_bytes`` bytes of unfinished payloads over all its sessions;
- its fair share of the global buffer budget: capacity / devices connected (``fair_share``);
  a device that already holds more than a newcomer's share keeps it but cannot grow;
- ``requests_per_s`` (a token bucket of ``burst`` requests): every InferHeader takes a token,
  accepted or not, so refused requests cannot be spammed for free either.

Every check runs before a byte is reserved, so nothing is allocated for a refused request.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from cloud.core._session_types import ByteBudget
from common.errors import ResourceExhausted

UNLIMITED = 2**62


@dataclass(frozen=True, slots=True)
class DeviceQuota:
    """What one device may hold at once (the ``limits`` settings section)."""

    max_sessions: int = 8
    max_inflight: int = 512
    max_buffered_bytes: int = 64 * 1024 * 1024
    requests_per_s: float = 500.0
    """0: no rate limit."""
    burst: int = 500
    fair_share: bool = True

    @classmethod
    def unlimited(cls) -> DeviceQuota:
        """No per-device limit (only the global budget applies)."""
        return cls(UNLIMITED, UNLIMITED, UNLIMITED, 0.0, 1, fair_share=False)


class DeviceLedger:
    """What one device holds across all its sessions."""

    __slots__ = ("_quotas", "_stamp", "_tokens", "buffered", "device", "inflight", "sessions")

    def __init__(self, quotas: DeviceQuotas, device: str) -> None:
        self._quotas = quotas
        self.device = device
        self.sessions = 0
        self.inflight = 0
        self.buffered = 0
        self._tokens = float(quotas.quota.burst)
        self._stamp = quotas.clock()

    def take_token(self) -> None:
        """One request arrives: refused when the device is over its request rate."""
        q = self._quotas.quota
        if q.requests_per_s <= 0:
            return
        now = self._quotas.clock()
        self._tokens = min(float(q.burst), self._tokens + (now - self._stamp) * q.requests_per_s)
        self._stamp = now
        if self._tokens < 1.0:
            raise ResourceExhausted(
                f"device {self.device!r} is over its request rate of {q.requests_per_s:g}/s "
                "(limits.requests_per_s); slow down"
            )
        self._tokens -= 1.0

    def open_request(self, nbytes: int) -> None:
        """Count a new request and reserve its ``nbytes`` of buffer, or raise (nothing taken)."""
        quotas, q = self._quotas, self._quotas.quota
        if self.inflight >= q.max_inflight:
            raise ResourceExhausted(
                f"device {self.device!r} has {self.inflight} requests in flight over its "
                f"sessions (limits.max_inflight_per_device = {q.max_inflight}); wait for answers"
            )
        if self.buffered + nbytes > q.max_buffered_bytes:
            raise ResourceExhausted(
                f"device {self.device!r} would buffer {self.buffered + nbytes} bytes of "
                f"unfinished payloads over its sessions (limits.max_buffered_bytes_per_device = "
                f"{q.max_buffered_bytes}); finish or cancel open requests"
            )
        share = quotas.fair_share()
        if q.fair_share and self.buffered + nbytes > share:
            raise ResourceExhausted(
                f"device {self.device!r} would buffer {self.buffered + nbytes} bytes, over its "
                f"fair share of the gateway buffer ({share} bytes with {quotas.connected_devices} "
                "devices connected; limits.fair_share)"
            )
        if not quotas.budget.reserve(nbytes):
            raise ResourceExhausted(
                "gateway buffer budget exhausted (session.global_buffer_bytes); retry later"
            )
        self.buffered += nbytes
        self.inflight += 1

    def release_bytes(self, nbytes: int) -> None:
        """A request's buffer is no longer needed (completed or dropped)."""
        self.buffered -= nbytes
        self._quotas.budget.release(nbytes)

    def finish_request(self) -> None:
        """A request left its session (answered, failed, cancelled or dropped)."""
        self.inflight -= 1

    def close_session(self) -> None:
        """One of the device's sessions ended (after it released its requests)."""
        self._quotas.session_closed(self)


class DeviceQuotas:
    """Every connected device's ledger; one per gateway, shared by all sessions."""

    def __init__(
        self,
        quota: DeviceQuota,
        budget: ByteBudget,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.quota = quota
        self.budget = budget
        self.clock = clock
        self._devices: dict[str, DeviceLedger] = {}

    @property
    def connected_devices(self) -> int:
        """Devices with at least one open session."""
        return len(self._devices)

    def ledger(self, device: str) -> DeviceLedger | None:
        """The ledger of a connected device."""
        return self._devices.get(device)

    def fair_share(self) -> int:
        """Bytes of the global budget one device may hold now."""
        return self.budget.capacity // max(1, len(self._devices))

    def open_session(self, device: str) -> DeviceLedger:
        """Count a new session of ``device``; RESOURCE_EXHAUSTED past ``max_sessions``."""
        ledger = self._devices.get(device)
        if ledger is None:
            ledger = self._devices[device] = DeviceLedger(self, device)
        if ledger.sessions >= self.quota.max_sessions:
            raise ResourceExhausted(
                f"device {device!r} already has {ledger.sessions} sessions open "
                f"(limits.max_sessions_per_device = {self.quota.max_sessions}); reuse one"
            )
        ledger.sessions += 1
        return ledger

    def session_closed(self, ledger: DeviceLedger) -> None:
        ledger.sessions -= 1
        if ledger.sessions <= 0 and ledger.inflight <= 0 and ledger.buffered <= 0:
            self._devices.pop(ledger.device, None)


__all__ = ["DeviceLedger", "DeviceQuota", "DeviceQuotas"]
