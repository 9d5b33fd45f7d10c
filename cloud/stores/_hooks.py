"""Adapters plugging these stores into the core's hooks (``cloud.core`` Protocols).

- :class:`DataPlaneIdempotency` implements ``cloud.core.IdempotencyStore`` (get/put of an
  ``InferenceResult``) over any store of this package, so replicas sharing one Redis answer a
  repeated idempotency key from the stored result.
- :class:`DataPlaneCache` implements ``cloud.core.ResultCache`` over a result cache here.
- :class:`MetadataSinkAdapter` implements ``cloud.core.MetadataSink``: converts the core's
  per-request record and queues it on a :class:`MetadataWriter` (never blocks).
- :class:`TelemetrySinkAdapter` implements ``cloud.core.TelemetrySink`` the same way.
"""

from __future__ import annotations

import logging

import numpy as np

from cloud.core import IdempotencyRecord, InferenceResult, TelemetryEvent
from cloud.core import RequestRecord as CoreRecord

from ._cache import CacheEntry, ResultCache
from ._idempotency import IdempotencyStore
from ._records import RequestRecord
from ._serde import decode_tensors, encode_tensors
from ._writer import MetadataWriter

log = logging.getLogger(__name__)


def encode_result(result: InferenceResult) -> bytes:
    """Frame an inference result for a shared store."""
    meta = {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "batch_size": result.batch_size,
    }
    return encode_tensors(result.outputs, meta)


def decode_result(frame: bytes) -> InferenceResult:
    """Inverse of :func:`encode_result`."""
    outputs, meta = decode_tensors(frame)
    return InferenceResult(
        model_name=str(meta.get("model_name", "")),
        model_version=str(meta.get("model_version", "")),
        outputs=outputs,
        batch_size=int(meta.get("batch_size", 1)),
    )


class DataPlaneIdempotency:
    """``cloud.core.IdempotencyStore`` over a store of this package (memory or Redis): the
    atomic ``reserve``/``complete``/``release`` protocol, so replicas sharing one Redis compute
    a key once even when the duplicates arrive at the same moment."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def reserve(self, key: str, digest: bytes) -> InferenceResult | None:
        outcome = await self.store.reserve(key, digest.hex())
        return None if outcome.result is None else decode_result(outcome.result)

    async def complete(self, key: str, digest: bytes, result: InferenceResult) -> None:
        await self.store.complete(key, digest.hex(), encode_result(result))

    async def release(self, key: str) -> None:
        await self.store.release(key)

    async def get(self, key: str) -> IdempotencyRecord | None:
        """The completed record of ``key`` without claiming it, or None."""
        found = await self.store.lookup(key)
        if found is None:
            return None
        digest, frame = found
        return IdempotencyRecord(bytes.fromhex(digest), decode_result(frame))

    async def close(self) -> None:
        """Close the underlying store."""
        await self.store.close()


class DataPlaneCache:
    """``cloud.core.ResultCache`` over a result cache of this package (memory or Redis); the
    same store CacheService serves. Faults are misses, never errors."""

    def __init__(self, cache: ResultCache, ttl_s: float | None = None) -> None:
        self.cache = cache
        self.ttl_s = ttl_s

    async def get(self, model: str, content_hash: str) -> InferenceResult | None:
        entry = await self.cache.get(model, content_hash)
        if entry is None:
            return None
        name, _, version = model.rpartition(":")
        return InferenceResult(
            model_name=name or model,
            model_version=entry.model_version or version,
            outputs=dict(entry.outputs),
            batch_size=1,
        )

    async def put(self, model: str, content_hash: str, result: InferenceResult) -> None:
        first = next(iter(result.outputs.values()), None)
        top = 0
        if first is not None and first.ndim == 2 and first.shape[0] == 1:
            top = int(np.asarray(first)[0].argmax())
        entry = CacheEntry(
            outputs=result.outputs, top_class=top, model_version=result.model_version
        )
        await self.cache.put(model, content_hash, entry, self.ttl_s)


class MetadataSinkAdapter:
    """``cloud.core.MetadataSink`` queuing records on a :class:`MetadataWriter` (never blocks)."""

    def __init__(self, writer: MetadataWriter) -> None:
        self.writer = writer

    def __call__(self, record: CoreRecord) -> None:
        self.writer.submit(
            RequestRecord(
                request_id=record.request_id,
                device_id=record.device_id,
                model_name=record.model_name,
                model_version=record.model_version,
                route="cache" if record.cached else record.route,
                status=record.status,
                session_id=record.session_id,
                deadline_ms=record.deadline_ms,
                idempotency_key=record.idempotency_key,
                offload_reason=record.offload_reason,
                codec=record.codec,
                top_class=record.top_class,
                confidence=record.confidence,
                latency_ms=record.latency_ms,
                bytes_in=record.bytes_in,
                bytes_out=record.bytes_out,
                compute_ms=record.compute_s * 1000.0,
            )
        )


class TelemetrySinkAdapter:
    """``cloud.core.TelemetrySink`` writing device-reported requests to ``requests``/``results``/
    ``costs`` (route = the device's route, e.g. ``edge``; a request the gateway already recorded
    keeps the gateway's row)."""

    def __init__(self, writer: MetadataWriter) -> None:
        self.writer = writer

    def __call__(self, event: TelemetryEvent) -> None:
        if not event.request_id:
            return
        self.writer.submit(
            RequestRecord(
                request_id=event.request_id,
                device_id=event.device_id,
                model_name=event.model_name,
                model_version="",
                route=event.route,
                status="OK",
                session_id=event.session_id,
                codec=event.codec,
                confidence=event.confidence or None,
                latency_ms=None if event.total_s is None else event.total_s * 1000.0,
                bytes_in=event.bytes_sent,
                bytes_out=event.bytes_received,
            )
        )
