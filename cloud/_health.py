"""grpc.health.v1 follows the models: the inference service is NOT_SERVING while any loaded
model cannot compute (a crashed batch worker restarting), SERVING again once all can.

Kubernetes-style probes and load balancers watch the overall status ("") and the inference
service's; the session service stays SERVING (its stream answers each request with its own
status). Explicitly unloaded models do not count: unloading is a decision, not a fault. Per-model
readiness is ModelReady / RepositoryIndex, as in Triton.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from grpc_health.v1 import health, health_pb2

from cloud.core import ModelKey
from common.aio import cancel_and_wait

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ModelHealth:
    """Polls ``models_down`` every ``interval_s`` and sets ``services`` accordingly."""

    def __init__(
        self,
        servicer: health.aio.HealthServicer,
        models_down: Callable[[], Sequence[ModelKey]],
        services: Sequence[str],
        interval_s: float = 0.1,
    ) -> None:
        self._servicer = servicer
        self._down = models_down
        self._services = tuple(services)
        self.interval_s = interval_s
        self._serving = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching (inside the running loop)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="model-health")

    async def check(self) -> bool:
        """Update the statuses now; True when every model can compute."""
        down = self._down()
        serving = not down
        if serving != self._serving:
            self._serving = serving
            if down:
                log.warning("not serving: model(s) %s cannot compute", [str(k) for k in down])
            else:
                log.info("every model computes again: serving")
            for name in self._services:
                await self._servicer.set(name, SERVING if serving else NOT_SERVING)
        return serving

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()

    async def close(self) -> None:
        """Stop watching (the statuses stay as they are)."""
        await cancel_and_wait(self._task)
        self._task = None


__all__ = ["ModelHealth"]
