"""The data plane: model lookup, input validation, idempotency and batching over a backend.

Every transport (ModelInfer, ModelStreamInfer, session streams, the REST bridge) converts its
messages to :class:`InferenceRequest` and calls :meth:`DataPlane.submit` or
:meth:`DataPlane.infer`; this module never imports grpc.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import numpy as np

from cloud._metrics import GatewayMetrics
from cloud.backends._base import Backend, ModelKey, ModelSpec
from cloud.batching import BatcherConfig, DynamicBatcher
from cloud.core._hooks import IdempotencyStore, MetadataSink, discard_record
from cloud.core._repository import ModelRepository
from cloud.core._types import InferenceRequest, InferenceResult, RequestRecord
from common.errors import AimlError, FailedPrecondition, InvalidArgument, Unavailable

log = logging.getLogger(__name__)


def validate_inputs(spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> int:
    """Check names, dtypes and shapes against ``spec``; returns the batch size (rows)."""
    wanted = {t.name for t in spec.inputs}
    unknown = set(inputs) - wanted
    if unknown:
        raise InvalidArgument(
            f"model {spec.key}: unknown input(s) {sorted(unknown)} (inputs: {sorted(wanted)})"
        )
    rows = -1
    for t in spec.inputs:
        arr = inputs.get(t.name)
        if arr is None:
            raise InvalidArgument(f"model {spec.key}: missing input {t.name!r}")
        if arr.dtype != t.dtype:
            raise InvalidArgument(
                f"model {spec.key}: input {t.name!r} has dtype {arr.dtype.name}, expected {t.dtype}"
            )
        if arr.ndim != len(t.shape) or any(
            w != -1 and w != g for w, g in zip(t.shape[1:], arr.shape[1:], strict=True)
        ):
            raise InvalidArgument(
                f"model {spec.key}: input {t.name!r} has shape {list(arr.shape)}, expected "
                f"{list(t.shape)} (-1 = any)"
            )
        n = int(arr.shape[0])
        if rows not in (-1, n):
            raise InvalidArgument(f"model {spec.key}: inputs disagree on the batch size")
        rows = n
    if rows < 1:
        raise InvalidArgument(f"model {spec.key}: empty batch")
    if rows > spec.max_batch_size:
        raise InvalidArgument(
            f"model {spec.key}: batch of {rows} exceeds max batch size {spec.max_batch_size}"
        )
    return rows


class DataPlane:
    """Serves the models of a repository through a backend, one batcher per model version."""

    def __init__(
        self,
        repository: ModelRepository,
        backend: Backend,
        batching: BatcherConfig,
        metrics: GatewayMetrics | None = None,
        idempotency: IdempotencyStore | None = None,
        metadata_sink: MetadataSink = discard_record,
    ) -> None:
        self.repository = repository
        self.backend = backend
        self.metrics = metrics or GatewayMetrics()
        self.idempotency = idempotency
        self.metadata_sink = metadata_sink
        self._batching = batching
        self._batchers: dict[ModelKey, DynamicBatcher] = {}
        self._inflight_keys: dict[str, asyncio.Future[InferenceResult]] = {}
        self._started = False

    async def start(self) -> None:
        """Load every repository model into the backend and start its batcher."""
        for spec in self.repository.specs():
            await self.load(spec)
        self._started = True

    async def load(self, spec: ModelSpec) -> None:
        """Serve ``spec`` (load into the backend, start a batcher)."""
        await self.backend.load(spec)
        self.repository.add(spec)
        if spec.key not in self._batchers:
            cfg = BatcherConfig(
                max_batch_size=min(self._batching.max_batch_size, spec.max_batch_size),
                max_queue_delay_s=self._batching.max_queue_delay_s,
                max_queue_size=self._batching.max_queue_size,
                workers=self._batching.workers,
            )
            outputs = tuple(t.name for t in spec.outputs)
            key = spec.key

            async def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                return await self.backend.infer(key, feeds, outputs)

            batcher = DynamicBatcher(key, run, cfg, self._observe_batch)
            batcher.start()
            self._batchers[key] = batcher

    async def unload(self, key: ModelKey) -> None:
        """Stop serving ``key``; its queued requests fail with UNAVAILABLE."""
        self.repository.remove(key)
        batcher = self._batchers.pop(key, None)
        if batcher is not None:
            await batcher.close()
        await self.backend.unload(key)

    async def close(self) -> None:
        """Stop every batcher and close the backend."""
        for batcher in list(self._batchers.values()):
            await batcher.close()
        self._batchers.clear()
        await self.backend.close()
        self._started = False

    async def ready(self) -> bool:
        """True when started and the backend is ready."""
        return self._started and await self.backend.ready()

    def model_ready(self, name: str, version: str = "") -> bool:
        """True when ``name`` (at ``version``) is served."""
        try:
            spec = self.repository.resolve(name, version)
        except AimlError:
            return False
        return spec.key in self._batchers

    def batcher(self, key: ModelKey) -> DynamicBatcher:
        """The batcher of ``key`` (Unavailable when not serving)."""
        batcher = self._batchers.get(key)
        if batcher is None:
            raise Unavailable(f"model {key} is not loaded")
        return batcher

    def _observe_batch(self, key: ModelKey, rows: int, compute_s: float) -> None:
        m = self.metrics
        m.child(m.batch_size, key.name).observe(rows)
        m.child(m.compute_seconds, key.name).observe(compute_s)

    def submit(
        self, request: InferenceRequest, spec: ModelSpec | None = None
    ) -> asyncio.Future[InferenceResult]:
        """Validate and queue ``request``; the future resolves to its result.

        Bad input raises at once (InvalidArgument, NotFound, ResourceExhausted,
        DeadlineExceeded); cancelling the future withdraws the request.
        """
        if spec is None:
            spec = self.repository.resolve(request.model_name, request.model_version)
        rows = validate_inputs(spec, request.inputs)
        if request.idempotency_key and self.idempotency is not None:
            return asyncio.ensure_future(self._infer_idempotent(request, spec, rows))
        return self._enqueue(request, spec, rows)

    def _enqueue(
        self, request: InferenceRequest, spec: ModelSpec, rows: int
    ) -> asyncio.Future[InferenceResult]:
        fut = self.batcher(spec.key).submit(
            request.inputs, rows, request.outputs, request.deadline, int(request.priority)
        )
        fut.add_done_callback(self._observe_queue)
        return fut

    def _observe_queue(self, fut: asyncio.Future[InferenceResult]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            r = fut.result()
            m = self.metrics
            m.child(m.queue_seconds, r.model_name).observe(r.queue_s)

    async def _infer_idempotent(
        self, request: InferenceRequest, spec: ModelSpec, rows: int
    ) -> InferenceResult:
        assert self.idempotency is not None
        key = f"{spec.name}\x00{request.idempotency_key}"
        running = self._inflight_keys.get(key)
        if running is not None:  # same key already computing in this process: share it
            result = await asyncio.shield(running)
            return _as_cached(result)
        record = await self.idempotency.get(request.idempotency_key)
        if record is not None:
            if record.digest != request.payload_digest:
                raise FailedPrecondition(
                    f"idempotency key {request.idempotency_key!r} was used with another payload"
                )
            return _as_cached(record.result)
        fut = self._enqueue(request, spec, rows)
        self._inflight_keys[key] = fut
        try:
            result = await fut
        finally:
            self._inflight_keys.pop(key, None)
        await self.idempotency.put(request.idempotency_key, request.payload_digest, result)
        return result

    async def infer(self, request: InferenceRequest) -> InferenceResult:
        """Run ``request`` to completion (submit and await)."""
        return await self.submit(request)

    def record(
        self,
        request: InferenceRequest,
        status: str,
        result: InferenceResult | None = None,
        bytes_in: int = 0,
    ) -> None:
        """Count a finished request and hand its record to the metadata sink (never raises)."""
        m = self.metrics
        m.child(m.requests, request.model_name, request.route, status).inc()
        if status != "OK" and result is None:
            m.child(m.rejections, status).inc()
        if self.metadata_sink is discard_record:
            return
        try:
            self.metadata_sink(
                RequestRecord(
                    request_id=request.request_id,
                    device_id=request.device_id,
                    model_name=request.model_name,
                    model_version=result.model_version if result else request.model_version,
                    route=request.route,
                    status=status,
                    codec=request.codec,
                    cut_point=request.cut_point,
                    idempotency_key=request.idempotency_key,
                    bytes_in=bytes_in,
                    queue_s=result.queue_s if result else 0.0,
                    compute_s=result.compute_s if result else 0.0,
                    cached=result.cached if result else False,
                )
            )
        except Exception:  # a sink fault must never fail inference
            log.exception("metadata sink failed")


def _as_cached(result: InferenceResult) -> InferenceResult:
    return InferenceResult(
        result.model_name,
        result.model_version,
        result.outputs,
        cached=True,
        batch_size=result.batch_size,
    )


def monotonic_deadline(seconds_left: float | None) -> float | None:
    """A monotonic deadline ``seconds_left`` from now (None stays None)."""
    return None if seconds_left is None else time.monotonic() + seconds_left


__all__ = ["DataPlane", "monotonic_deadline", "validate_inputs"]
