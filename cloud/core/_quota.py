"""Per-device quotas and each device's fair share of the gateway's buffer budget.

Identity is the device id the transport established (the client certificate); every session of
one device and every inference call it makes (KServe ``ModelInfer``, each ``ModelStreamInfer``
request, REST ``/v1/infer``, ``/v1/features`` and ``/v2/.../infer``) draw on one
:class:`DeviceLedger`, so opening more streams or calling instead of streaming buys a device
nothing. :class:`DeviceQuotas` (one per gateway) holds the ledgers and refuses, with
RESOURCE_EXHAUSTED naming the limit, a device that would exceed:

- ``max_sessions`` streams open at once;
- ``max_inflight`` requests open over all its sessions and calls (reassembling, queued or
  computing);
- ``max_buffered_bytes`` bytes of unfinished payloads over all its sessions and calls;
- its fair share of the global buffer budget: capacity / devices connected (``fair_share``);
  a device that already holds more than a newcomer's share keeps it but cannot grow;
- ``requests_per_s`` (a token bucket of ``burst`` requests): every InferHeader and every call
  takes a token, accepted or not, so refused requests cannot be spammed for free either.

Every check runs before a byte is reserved, so nothing is allocated for a refused request. A
call (:meth:`DeviceQuotas.call`, a :class:`DeviceCall`) holds its place in flight and its bytes
until it is left, on every exit path. A ledger with no session and nothing in flight is dropped;
a bucket that is not full yet is kept aside (a float pair) until it would be, so a device cannot
refill its tokens by pausing between calls.

With ``limits.shared`` (several gateway processes, Redis stores) a :class:`SharedQuotas` (the
Redis implementation is ``cloud._shared_quotas.RedisQuotas``) counts the request rate and the
sessions over all processes: :meth:`DeviceQuotas.enter_session` and :meth:`DeviceQuotas.enter_call`
(async) ask it first, and :meth:`DeviceLedger.take_token` then spends a token leased from the
shared bucket. While it cannot answer (Redis down), the process-local limits apply. In flight and
buffered bytes stay per process: they bound this process's memory.

Callers that are not devices (services and operators with tokens, the ``--insecure`` development
principal, which names no device) are not counted here: there is no device to charge, and keying
them by peer address would make every client behind one address share one quota.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

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


class SharedQuotas(Protocol):
    """Request rate and session counts shared by every gateway process (``limits.shared``)."""

    async def lease(self, device: str) -> None:
        """Make sure ``device`` has a token leased here for its next request, if the shared
        bucket has one (a round trip only when the lease is spent or stale)."""

    def spend(self, device: str) -> bool | None:
        """Spend one leased token: True, False (the shared bucket is dry: refuse), or None (no
        shared answer, e.g. Redis down: the process-local bucket decides)."""

    async def open_session(self, device: str, sessions_here: int) -> None:
        """Record that this process now has ``sessions_here`` sessions of ``device``, or raise
        RESOURCE_EXHAUSTED when that takes the device past its sessions over all processes."""

    def session_closed(self, device: str, sessions_here: int) -> None:
        """This process now has ``sessions_here`` sessions of ``device`` (recorded later)."""


class DeviceLedger:
    """What one device holds across all its sessions and calls."""

    __slots__ = ("_quotas", "_stamp", "_tokens", "buffered", "device", "inflight", "sessions")

    def __init__(self, quotas: DeviceQuotas, device: str) -> None:
        self._quotas = quotas
        self.device = device
        self.sessions = 0
        self.inflight = 0
        self.buffered = 0
        self._tokens = float(quotas.quota.burst)
        self._stamp = quotas.clock()

    def tokens(self) -> float:
        """Tokens in the device's bucket now (refilled at ``requests_per_s`` up to ``burst``)."""
        q = self._quotas.quota
        now = self._quotas.clock()
        self._tokens = min(float(q.burst), self._tokens + (now - self._stamp) * q.requests_per_s)
        self._stamp = now
        return self._tokens

    def take_token(self) -> None:
        """One request arrives: refused when the device is over its request rate."""
        q = self._quotas.quota
        if q.requests_per_s <= 0:
            return
        shared = self._quotas.shared
        granted = None if shared is None else shared.spend(self.device)
        if granted is False:
            raise ResourceExhausted(
                f"device {self.device!r} is over its request rate of {q.requests_per_s:g}/s "
                "over all gateway processes (limits.requests_per_s); slow down"
            )
        if granted:
            return
        if self.tokens() < 1.0:
            raise ResourceExhausted(
                f"device {self.device!r} is over its request rate of {q.requests_per_s:g}/s "
                "(limits.requests_per_s); slow down"
            )
        self._tokens -= 1.0

    def open_request(self, nbytes: int) -> None:
        """Count a new request and reserve its ``nbytes`` of buffer, or raise (nothing taken)."""
        q = self._quotas.quota
        if self.inflight >= q.max_inflight:
            raise ResourceExhausted(
                f"device {self.device!r} has {self.inflight} requests in flight over its "
                f"sessions and calls (limits.max_inflight_per_device = {q.max_inflight}); "
                "wait for answers"
            )
        self.reserve(nbytes)
        self.inflight += 1

    def reserve(self, nbytes: int) -> None:
        """Reserve ``nbytes`` more of buffer for an open request, or raise (nothing taken)."""
        quotas, q = self._quotas, self._quotas.quota
        if self.buffered + nbytes > q.max_buffered_bytes:
            raise ResourceExhausted(
                f"device {self.device!r} would buffer {self.buffered + nbytes} bytes of "
                "unfinished payloads over its sessions and calls "
                f"(limits.max_buffered_bytes_per_device = {q.max_buffered_bytes}); "
                "finish or cancel open requests"
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

    def release_bytes(self, nbytes: int) -> None:
        """A request's buffer is no longer needed (completed or dropped)."""
        self.buffered -= nbytes
        self._quotas.budget.release(nbytes)

    def finish_request(self) -> None:
        """A request left its session or call (answered, failed, cancelled or dropped)."""
        self.inflight -= 1

    def close_session(self) -> None:
        """One of the device's sessions ended (after it released its requests)."""
        self._quotas.session_closed(self)

    @property
    def idle(self) -> bool:
        """No session open and nothing in flight or buffered: the ledger can go."""
        return self.sessions <= 0 and self.inflight <= 0 and self.buffered <= 0


class DeviceCall:
    """One inference call of a device, from :meth:`DeviceQuotas.call` until :meth:`leave`
    (or the end of its ``with`` block): one request in flight holding its bytes. A call of no
    device (``ledger`` None) holds nothing."""

    __slots__ = ("_ledger", "nbytes")

    def __init__(self, ledger: DeviceLedger | None, nbytes: int = 0) -> None:
        self._ledger = ledger
        self.nbytes = nbytes
        """Bytes the call holds of the device's buffer quota and the global budget."""

    def hold(self, nbytes: int) -> None:
        """Hold ``nbytes`` more (a REST body once read), or raise RESOURCE_EXHAUSTED naming the
        limit (nothing more taken; what the call holds stays until it is left)."""
        if self._ledger is not None and nbytes > 0:
            self._ledger.reserve(nbytes)
            self.nbytes += nbytes

    def leave(self) -> None:
        """The call ended (answered, failed or cancelled): its bytes and its place in flight are
        returned; the device's ledger goes once it is idle. Calling it again does nothing."""
        ledger, self._ledger = self._ledger, None
        if ledger is None:
            return
        ledger.release_bytes(self.nbytes)
        ledger.finish_request()
        ledger._quotas.left(ledger)

    def __enter__(self) -> DeviceCall:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.leave()


class DeviceQuotas:
    """Every connected device's ledger; one per gateway, shared by all sessions and calls."""

    def __init__(
        self,
        quota: DeviceQuota,
        budget: ByteBudget,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedQuotas | None = None,
    ) -> None:
        self.quota = quota
        self.budget = budget
        self.clock = clock
        self.shared = shared
        """Rate and sessions counted over all gateway processes (``limits.shared``), or None."""
        self._devices: dict[str, DeviceLedger] = {}
        self._resting: dict[str, tuple[float, float]] = {}
        """(tokens, stamp) of idle devices whose bucket is not full yet, oldest first."""

    @classmethod
    def unlimited(cls, budget: ByteBudget | None = None) -> DeviceQuotas:
        """No per-device limit; only ``budget`` (default: none) bounds the bytes held."""
        return cls(DeviceQuota.unlimited(), budget or ByteBudget(UNLIMITED))

    @property
    def connected_devices(self) -> int:
        """Devices with a session open or a call in flight."""
        return len(self._devices)

    def ledger(self, device: str) -> DeviceLedger | None:
        """The ledger of a connected device."""
        return self._devices.get(device)

    def fair_share(self) -> int:
        """Bytes of the global budget one device may hold now."""
        return self.budget.capacity // max(1, len(self._devices))

    def _ledger_of(self, device: str) -> DeviceLedger:
        ledger = self._devices.get(device)
        if ledger is None:
            ledger = self._devices[device] = DeviceLedger(self, device)
            rested = self._resting.pop(device, None)
            if rested is not None:  # the bucket it left behind, refilling since
                ledger._tokens, ledger._stamp = rested
        return ledger

    def open_session(self, device: str) -> DeviceLedger:
        """Count a new session of ``device``; RESOURCE_EXHAUSTED past ``max_sessions``."""
        ledger = self._ledger_of(device)
        if ledger.sessions >= self.quota.max_sessions:
            raise ResourceExhausted(
                f"device {device!r} already has {ledger.sessions} sessions open "
                f"(limits.max_sessions_per_device = {self.quota.max_sessions}); reuse one"
            )
        ledger.sessions += 1
        return ledger

    async def enter_session(self, device: str) -> DeviceLedger:
        """:meth:`open_session`, counted over all gateway processes when quotas are shared."""
        ledger = self.open_session(device)
        if self.shared is not None:
            try:
                await self.shared.open_session(device, ledger.sessions)
            except ResourceExhausted:  # refused: nothing was recorded
                self.session_closed(ledger, record=False)
                raise
            except BaseException:  # cancelled mid-way: record the count as it is again
                self.session_closed(ledger)
                raise
        return ledger

    async def enter_call(self, device: str, nbytes: int = 0) -> DeviceCall:
        """:meth:`call`, its token leased from the shared bucket when quotas are shared."""
        await self.ready(device)
        return self.call(device, nbytes)

    async def ready(self, device: str) -> None:
        """Before a request of ``device`` takes its token (:meth:`DeviceLedger.take_token`): with
        shared quotas, lease tokens from the shared bucket when none is left here."""
        if self.shared is not None and device and self.quota.requests_per_s > 0:
            await self.shared.lease(device)

    def call(self, device: str, nbytes: int = 0) -> DeviceCall:
        """Count an inference call of ``device`` holding ``nbytes`` (what it carries): takes a
        token, a place in flight and the bytes, or raises RESOURCE_EXHAUSTED naming the limit
        (the token stays taken, nothing else is held). Leave the returned call when it ends,
        whatever the outcome (``with quotas.call(...)``). ``device`` empty: a caller that is no
        device, not counted."""
        if not device:
            return DeviceCall(None)
        ledger = self._ledger_of(device)
        try:
            ledger.take_token()
            ledger.open_request(nbytes)
        except ResourceExhausted:
            self.left(ledger)
            raise
        return DeviceCall(ledger, nbytes)

    def session_closed(self, ledger: DeviceLedger, *, record: bool = True) -> None:
        ledger.sessions -= 1
        if record and self.shared is not None:
            self.shared.session_closed(ledger.device, ledger.sessions)
        self.left(ledger)

    def left(self, ledger: DeviceLedger) -> None:
        """Drop ``ledger`` once it is idle, keeping its bucket aside until it is full again."""
        if not ledger.idle or self._devices.get(ledger.device) is not ledger:
            return
        del self._devices[ledger.device]
        q = self.quota
        if q.requests_per_s > 0 and ledger.tokens() < q.burst:
            self._resting[ledger.device] = (ledger._tokens, ledger._stamp)
        self._forget_full_buckets()

    def _forget_full_buckets(self) -> None:
        # Oldest first: every bucket rested longer than burst / rate is full again.
        q, now = self.quota, self.clock()
        while self._resting:
            device, (tokens, stamp) = next(iter(self._resting.items()))
            if tokens + (now - stamp) * q.requests_per_s < q.burst:
                break
            del self._resting[device]

    @property
    def resting_buckets(self) -> int:
        """Idle devices whose token bucket is still refilling (kept as two floats each)."""
        return len(self._resting)


__all__ = ["DeviceCall", "DeviceLedger", "DeviceQuota", "DeviceQuotas", "SharedQuotas"]
