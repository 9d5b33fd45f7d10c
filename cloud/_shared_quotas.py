"""Per-device request rate and session counts shared by every gateway process over Redis
(``limits.shared``), so a device connected to N workers or replicas does not get N times them.

- **Rate**: one token bucket per device in Redis, refilled and taken in one Lua script on Redis's
  own clock (``TIME``), so processes' clocks never matter. A process takes tokens in leases of
  :func:`lease_size` (about 50 ms of the rate, at most a quarter of the burst) and spends them
  locally, one round trip per lease; a lease lasts :data:`LEASE_S`, after which what is left of
  it is lost. Over-admission is therefore bounded by one lease per process.
- **Sessions**: a hash per device, process id -> sessions open there, checked and written in one
  Lua script that ignores (and deletes) the counts of processes whose heartbeat key expired, so a
  process that died releases its sessions after ``heartbeat_ttl_s``. Each heartbeat rewrites
  this process's counts, which also repairs any write that Redis missed.
- **Redis unreachable**: every process falls back to its own limits (fails open to the
  per-process quota), says so once per outage in the log, and tries Redis again every
  ``retry_s``; no call waits longer than the client's socket timeout.

Keys hash the device id (``sha256``), so a 10 kB or binary id costs a fixed-size key. The Lua
scripts touch heartbeat keys they are not passed: a single Redis (or one Redis Cluster slot via
the ``{...}`` hash tag of ``prefix``), as the stores use.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cloud.core import DeviceQuota
from common.aio import cancel_and_wait
from common.errors import ResourceExhausted

log = logging.getLogger(__name__)

LEASE_S = 1.0
"""How long leased tokens may be spent; the rest of a lease is then lost."""

FLUSH_S = 0.05
"""How often closed sessions are written to Redis (batched)."""

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens, stamp = tonumber(v[1]), tonumber(v[2])
if tokens == nil or stamp == nil then tokens = burst; stamp = now end
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local got = math.min(want, math.floor(tokens))
tokens = tokens - got
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return got
"""

_OPEN_SESSION = """
local me, most, mine = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local all = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #all, 2 do
  if all[i] ~= me then
    if redis.call('EXISTS', ARGV[4] .. all[i]) == 1 then
      others = others + tonumber(all[i + 1])
    else
      redis.call('HDEL', KEYS[1], all[i])
    end
  end
end
if others + mine > most then return others end
redis.call('HSET', KEYS[1], me, mine)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return -1
"""


def lease_size(quota: DeviceQuota) -> int:
    """Tokens one process takes from the shared bucket at a time: about 50 ms of the rate, never
    more than a quarter of the burst, at least one."""
    return max(1, min(int(quota.requests_per_s * 0.05), quota.burst // 4))


def device_key(prefix: str, kind: str, device: str) -> str:
    """The fixed-size Redis key of ``device`` (any length, any bytes)."""
    digest = hashlib.sha256(device.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return f"{prefix}:{kind}:{digest}"


@dataclass(slots=True)
class Lease:
    """Tokens of one device leased here."""

    tokens: int
    expires: float
    dry_until: float = 0.0
    """The shared bucket had fewer than a lease: no new round trip before then."""


class RedisQuotas:
    """:class:`cloud.core.SharedQuotas` over Redis (``start`` … ``close``)."""

    def __init__(
        self,
        quota: DeviceQuota,
        redis_url: str,
        *,
        prefix: str = "aiml021:quota",
        heartbeat_ttl_s: float = 10.0,
        retry_s: float = 1.0,
        timeout_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import redis.asyncio as aioredis

        self.quota = quota
        self.prefix = prefix
        self.heartbeat_ttl_s = heartbeat_ttl_s
        self.retry_s = retry_s
        self.clock = clock
        self.process_id = uuid.uuid4().hex
        """This process's field in every device's session hash."""
        self.lease_tokens = lease_size(quota)
        self._redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._take = self._redis.register_script(_TAKE)
        self._open = self._redis.register_script(_OPEN_SESSION)
        self._leases: dict[str, Lease] = {}
        self._fetching: dict[str, asyncio.Future[None]] = {}
        self._sessions: dict[str, int] = {}
        """Sessions open in this process, per device (what its hash fields should say)."""
        self._dirty: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self.outages = 0
        """Times Redis became unreachable (each logged once)."""

    @property
    def up(self) -> bool:
        """Whether the last exchange with Redis worked."""
        return self._down_until == 0.0

    def _hb_prefix(self) -> str:
        return f"{self.prefix}:hb:"

    def _failed(self, exc: BaseException) -> None:
        if self.up:
            self.outages += 1
            log.warning(
                "limits.shared: Redis unreachable (%s); each gateway process enforces the "
                "per-device rate and sessions alone until it is back",
                exc,
            )
        self._down_until = self.clock() + self.retry_s

    def _recovered(self) -> None:
        if not self.up:
            log.warning("limits.shared: Redis reachable again; quotas shared over processes")
            self._down_until = 0.0
            self._dirty.update(self._sessions)  # what changed meanwhile reaches Redis

    def _may_try(self) -> bool:
        return self.up or self.clock() >= self._down_until

    # -- rate ---------------------------------------------------------------------------------

    async def lease(self, device: str) -> None:
        for _ in range(4):  # concurrent requests may spend a fresh lease before this one
            now = self.clock()
            lease = self._leases.get(device)
            if lease is not None and lease.tokens >= 1 and lease.expires > now:
                return
            if lease is not None and lease.dry_until > now:
                return  # the shared bucket is dry: spend() refuses
            if not self._may_try():
                return  # Redis down: the local bucket decides
            pending = self._fetching.get(device)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._fetching[device] = pending
                try:
                    await self._fetch(device)
                finally:
                    del self._fetching[device]
                    pending.set_result(None)
            else:
                await asyncio.shield(pending)
            if not self.up:
                return

    async def _fetch(self, device: str) -> None:
        q, want = self.quota, self.lease_tokens
        try:
            got = int(
                await self._take(
                    keys=[device_key(self.prefix, "rate", device)],
                    args=[q.requests_per_s, q.burst, want],
                )
            )
        except Exception as exc:  # any Redis failure: local limits apply
            self._failed(exc)
            return
        self._recovered()
        now = self.clock()
        lease = Lease(got, now + LEASE_S)
        if got < want:  # no full lease before the bucket refills by one
            lease.dry_until = now + min(LEASE_S, want / q.requests_per_s)
        self._leases.pop(device, None)  # re-inserted last: the dict stays oldest first
        self._leases[device] = lease
        self._forget_stale(now)

    def _forget_stale(self, now: float) -> None:
        while self._leases:
            device, lease = next(iter(self._leases.items()))
            if max(lease.expires, lease.dry_until) > now:
                break
            del self._leases[device]

    def spend(self, device: str) -> bool | None:
        if not self.up:
            return None
        lease = self._leases.get(device)
        now = self.clock()
        if lease is None or (lease.expires <= now and lease.dry_until <= now):
            return None  # never leased (no lease() before): the local bucket decides
        if lease.tokens >= 1 and lease.expires > now:
            lease.tokens -= 1
            return True
        return False

    # -- sessions -----------------------------------------------------------------------------

    async def open_session(self, device: str, sessions_here: int) -> None:
        self._sessions[device] = sessions_here
        if not self._may_try():
            self._dirty.add(device)
            return
        try:
            others = int(
                await self._open(
                    keys=[device_key(self.prefix, "sessions", device)],
                    args=[
                        self.process_id,
                        self.quota.max_sessions,
                        sessions_here,
                        self._hb_prefix(),
                        self._ttl_ms() * 3,
                    ],
                )
            )
        except Exception as exc:  # Redis down: the local count decides
            self._failed(exc)
            self._dirty.add(device)
            return
        self._recovered()
        if others >= 0:
            self._set_here(device, sessions_here - 1)
            raise ResourceExhausted(
                f"device {device!r} already has {others + sessions_here - 1} sessions open "
                "over all gateway processes "
                f"(limits.max_sessions_per_device = {self.quota.max_sessions}); reuse one"
            )

    def session_closed(self, device: str, sessions_here: int) -> None:
        self._set_here(device, sessions_here)
        self._dirty.add(device)

    def _set_here(self, device: str, n: int) -> None:
        if n > 0:
            self._sessions[device] = n
        else:
            self._sessions.pop(device, None)

    def _ttl_ms(self) -> int:
        return max(1, math.ceil(self.heartbeat_ttl_s * 1000))

    async def heartbeat(self) -> None:
        """Refresh this process's heartbeat and write its session counts (the dirty ones, or all
        with ``everything``)."""
        await self._write(everything=True)

    async def _write(self, *, everything: bool) -> None:
        devices = set(self._sessions) | self._dirty if everything else set(self._dirty)
        self._dirty.clear()
        ttl = self._ttl_ms()
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(self._hb_prefix() + self.process_id, 1, px=ttl)
                for device in devices:
                    key = device_key(self.prefix, "sessions", device)
                    n = self._sessions.get(device, 0)
                    if n > 0:
                        pipe.hset(key, self.process_id, n)
                        pipe.pexpire(key, ttl * 3)
                    else:
                        pipe.hdel(key, self.process_id)
                await pipe.execute()
        except Exception as exc:  # written again once Redis is back
            self._dirty.update(devices)
            self._failed(exc)
            return
        self._recovered()

    async def _loop(self) -> None:
        interval = self.heartbeat_ttl_s / 3
        next_beat = self.clock() + interval
        while True:
            # closed sessions reach Redis within a tick, batched; the heartbeat every interval
            await asyncio.sleep(min(FLUSH_S, interval))
            if self.clock() >= next_beat:
                await self._write(everything=True)
                next_beat = self.clock() + (interval if self.up else min(interval, self.retry_s))
            elif self._dirty and self._may_try():
                await self._write(everything=False)

    async def start(self) -> None:
        """Announce this process (heartbeat) and keep it alive in the background."""
        await self.heartbeat()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop the heartbeat and remove this process's counts (others need not wait for the
        heartbeat to expire)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for device in self._sessions:
                    pipe.hdel(device_key(self.prefix, "sessions", device), self.process_id)
                pipe.delete(self._hb_prefix() + self.process_id)
                await pipe.execute()
        except Exception as exc:  # the heartbeat expires anyway
            log.debug("limits.shared: could not remove this process's counts: %s", exc)
        await self._redis.aclose()


__all__ = ["LEASE_S", "Lease", "RedisQuotas", "device_key", "lease_size"]
