"""Rollouts shared by every gateway process (workers of one host, replicas of many) over Redis.

A rollout is set through DeployService (gRPC or REST) on whichever process the operator's call
reached, and a rollback is decided by whichever process saw the candidate fail; every process
must then route the same way. :class:`SharedRollouts` keeps each process's
:class:`cloud.core.RolloutManager` in step with one Redis hash (model name -> rollout as JSON),
last writer wins by ``updated_at``:

- every ``interval_s`` it pushes local rollouts newer than Redis's copy (a compare-and-set in one
  Lua script, so an older write never replaces a newer one) and adopts Redis's rollouts newer than
  the local ones (:meth:`RolloutManager.adopt`);
- a change therefore reaches every process within about two intervals. Canary choices hash the
  routing key, so a request routes the same on every process once they agree.

``updated_at`` is wall-clock time: processes on different hosts rely on synchronised clocks (NTP),
as Kubernetes nodes have.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from cloud.core import RollbackPolicy, Rollout, RolloutManager, RolloutMode, RolloutState
from common.aio import cancel_and_wait

log = logging.getLogger(__name__)

KEY = "aiml021:rollouts"
"""The Redis hash: model name -> rollout JSON."""

_NEWER_WINS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  if cjson.decode(cur)['updated_at'] >= tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def rollout_to_json(r: Rollout) -> str:
    """One rollout as the JSON the shared hash holds."""
    return json.dumps(
        {
            "model_name": r.model_name,
            "stable_version": r.stable_version,
            "candidate_version": r.candidate_version,
            "mode": r.mode.value,
            "traffic_fraction": r.traffic_fraction,
            "max_error_rate": r.rollback.max_error_rate,
            "min_requests": r.rollback.min_requests,
            "state": r.state.value,
            "updated_at": r.updated_at,
        }
    )


def rollout_from_json(text: str | bytes) -> Rollout:
    """The rollout :func:`rollout_to_json` wrote."""
    d: dict[str, Any] = json.loads(text)
    return Rollout(
        model_name=d["model_name"],
        stable_version=d["stable_version"],
        candidate_version=d["candidate_version"],
        mode=RolloutMode(d["mode"]),
        traffic_fraction=float(d["traffic_fraction"]),
        rollback=RollbackPolicy(float(d["max_error_rate"]), int(d["min_requests"])),
        state=RolloutState(d["state"]),
        updated_at=float(d["updated_at"]),
    )


class SharedRollouts:
    """Keeps ``manager`` in step with the rollouts in Redis (``start`` … ``close``)."""

    def __init__(
        self, manager: RolloutManager, redis_url: str, *, interval_s: float = 0.5, key: str = KEY
    ) -> None:
        import redis.asyncio as aioredis

        self.manager = manager
        self.key = key
        self.interval_s = interval_s
        self._redis = aioredis.Redis.from_url(redis_url)
        self._cas = self._redis.register_script(_NEWER_WINS)
        self._task: asyncio.Task[None] | None = None

    async def sync(self) -> None:
        """One exchange: push what is newer here, adopt what is newer there."""
        remote = {
            (k.decode() if isinstance(k, bytes) else k): rollout_from_json(v)
            for k, v in (await self._redis.hgetall(self.key)).items()
        }
        for r in self.manager.rollouts():
            theirs = remote.get(r.model_name)
            if theirs is None or r.updated_at > theirs.updated_at:
                await self._cas(
                    keys=[self.key], args=[r.model_name, rollout_to_json(r), r.updated_at]
                )
        local = {r.model_name: r for r in self.manager.rollouts()}
        for name, theirs in remote.items():
            mine = local.get(name)
            if mine is None or theirs.updated_at > mine.updated_at:
                self.manager.adopt(theirs)

    async def _loop(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception as exc:  # Redis down: keep serving the rollouts held here
                log.warning("rollout sync with Redis failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def start(self) -> None:
        """Adopt what Redis holds, then keep in step in the background."""
        try:
            await self.sync()
        except Exception as exc:
            log.warning("rollout sync with Redis failed at start: %s", exc)
        self._task = asyncio.create_task(self._loop(), name="shared-rollouts")

    async def close(self) -> None:
        """Push a last time (a rollout set just before shutdown is not lost), stop."""
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
        try:
            await self.sync()
        except Exception as exc:
            log.warning("last rollout sync with Redis failed: %s", exc)
        await self._redis.aclose()


__all__ = ["KEY", "SharedRollouts", "rollout_from_json", "rollout_to_json"]
