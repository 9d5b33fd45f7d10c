"""Applies rollouts in front of the data plane: picks the version of requests that name none,
measures stable and candidate answers and runs shadow copies (see :mod:`cloud.core._rollout`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Protocol

from cloud.core._rollout import RolloutManager, VersionChoice
from cloud.core._types import InferenceRequest, InferenceResult, ModelSpec
from common.errors import AimlError, FailedPrecondition, InvalidArgument

log = logging.getLogger(__name__)


class _Plane(Protocol):
    async def infer(self, request: InferenceRequest) -> InferenceResult: ...


class RolloutRouter:
    """Applies rollouts in front of a data plane; owns the shadow tasks it starts.

    ``infer`` works over anything with ``async infer``; ``submit`` (what
    ``cloud.core.DataPlane`` calls as its router, so gRPC ModelInfer, ModelStreamInfer, session
    and REST requests all get rollouts) needs a data plane (``submit_direct``). A request for a
    tail model ``<bundle>.<cut>`` without a rollout of its own follows the bundle's rollout (the
    tails of a bundle version carry that version).
    """

    def __init__(self, plane: _Plane, manager: RolloutManager, max_shadow_tasks: int = 256) -> None:
        self.plane = plane
        self.manager = manager
        self._shadow: set[asyncio.Task[None]] = set()
        self._max_shadow = max_shadow_tasks
        self.shadow_dropped = 0

    def _decide(
        self, request: InferenceRequest, spec: ModelSpec | None = None
    ) -> tuple[str, VersionChoice] | None:
        if request.model_version:
            return None
        key = request.request_id or request.device_id
        decision = self.manager.choose(request.model_name, key)
        if decision is not None:
            return request.model_name, decision
        if spec is None:
            repo = getattr(self.plane, "repository", None)
            if repo is not None:
                try:
                    spec = repo.resolve(request.model_name)
                except AimlError:
                    spec = None
        bundle = spec.bundle if spec is not None else ""
        if bundle and bundle != request.model_name:
            decision = self.manager.choose(bundle, key)
            if decision is not None:
                return bundle, decision
        return None

    def _failed(self, name: str, decision: VersionChoice, exc: BaseException) -> None:
        if decision.candidate and not isinstance(exc, (InvalidArgument, FailedPrecondition)):
            self.manager.record_candidate(name, ok=False)

    def _succeeded(
        self,
        name: str,
        decision: VersionChoice,
        routed: InferenceRequest,
        result: InferenceResult,
        latency: float,
    ) -> None:
        if decision.candidate:
            self.manager.record_candidate(name, ok=True, latency_s=latency)
        else:
            self.manager.record_stable(name, latency)
        if decision.shadow_version:
            self._start_shadow(routed, decision.shadow_version, result)

    def submit(
        self, request: InferenceRequest, spec: ModelSpec | None = None
    ) -> asyncio.Future[InferenceResult] | None:
        """Queue ``request`` on the version its rollout picks (``cloud.core.RequestRouter``);
        None when no rollout applies (the data plane then serves it as is)."""
        picked = self._decide(request, spec)
        if picked is None:
            return None
        name, decision = picked
        routed = dataclasses.replace(request, model_version=decision.version)
        submit_direct = self.plane.submit_direct  # type: ignore[attr-defined]
        started = time.perf_counter()
        try:
            fut: asyncio.Future[InferenceResult] = submit_direct(routed, None)
        except AimlError as exc:
            self._failed(name, decision, exc)
            raise

        def done(f: asyncio.Future[InferenceResult]) -> None:
            if f.cancelled():
                return
            exc = f.exception()
            if exc is not None:
                self._failed(name, decision, exc)
                return
            self._succeeded(name, decision, routed, f.result(), time.perf_counter() - started)

        fut.add_done_callback(done)
        return fut

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Serve ``request``, routing it per the model's rollout when it names no version."""
        picked = self._decide(request)
        if picked is None:
            return await self.plane.infer(request)
        name, decision = picked
        routed = dataclasses.replace(request, model_version=decision.version)
        started = time.perf_counter()
        try:
            result = await self.plane.infer(routed)
        except AimlError as exc:
            self._failed(name, decision, exc)
            raise
        self._succeeded(name, decision, routed, result, time.perf_counter() - started)
        return result

    def _start_shadow(
        self, request: InferenceRequest, version: str, stable: InferenceResult
    ) -> None:
        if len(self._shadow) >= self._max_shadow:
            self.shadow_dropped += 1
            return
        copy = dataclasses.replace(
            request,
            model_version=version,
            idempotency_key="",
            request_id=request.request_id + "#shadow",
        )
        task = asyncio.create_task(
            self._run_shadow(copy, stable), name=f"shadow-{request.model_name}"
        )
        self._shadow.add(task)
        task.add_done_callback(self._shadow.discard)

    async def _run_shadow(self, copy: InferenceRequest, stable: InferenceResult) -> None:
        started = time.perf_counter()
        try:
            result = await self.plane.infer(copy)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the shadow's failure is measured, never surfaced
            log.debug("shadow copy of %s failed: %s", copy.model_name, exc)
            self.manager.record_candidate(copy.model_name, ok=False)
            return
        self.manager.record_shadow(copy.model_name, stable, result, time.perf_counter() - started)

    async def drain(self) -> None:
        """Wait for running shadow copies (tests and graceful shutdown)."""
        if self._shadow:
            await asyncio.gather(*list(self._shadow), return_exceptions=True)

    async def close(self) -> None:
        """Cancel running shadow copies."""
        for t in list(self._shadow):
            t.cancel()
        await self.drain()


__all__ = ["RolloutRouter"]
