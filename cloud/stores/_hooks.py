"""Adapters plugging these stores into the core's hooks (``cloud.core`` Protocols).

- :class:`DataPlaneIdempotency` implements ``cloud.core.IdempotencyStore`` (get/put of an
  ``InferenceResult``) over any store of this package, so replicas sharing one Redis answer a
  repeated idempotency key from the stored result.
- :class:`MetadataSinkAdapter` implements ``cloud.core.MetadataSink``: converts the core's
  per-request record and queues it on a :class:`MetadataWriter` (never blocks).
"""

from __future__ import annotations

import logging

from cloud.core import IdempotencyRecord, InferenceResult
from cloud.core import RequestRecord as CoreRecord

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
    """``cloud.core.IdempotencyStore`` over a store of this package (memory or Redis)."""

    def __init__(self, store: IdempotencyStore) -> None:
        self.store = store

    async def get(self, key: str) -> IdempotencyRecord | None:
        found = await self.store.lookup(key)
        if found is None:
            return None
        digest, frame = found
        return IdempotencyRecord(bytes.fromhex(digest), decode_result(frame))

    async def put(self, key: str, digest: bytes, result: InferenceResult) -> None:
        await self.store.complete(key, digest.hex(), encode_result(result))

    async def close(self) -> None:
        """Close the underlying store."""
        await self.store.close()


class MetadataSinkAdapter:
    """``cloud.core.MetadataSink`` queuing records on a :class:`MetadataWriter`.

    Fields the core record lacks come from its ``extra`` dict when present: ``session_id``,
    ``offload_reason``, ``deadline_ms``, ``top_class``, ``confidence``, ``latency_ms``,
    ``bytes_out``.
    """

    def __init__(self, writer: MetadataWriter) -> None:
        self.writer = writer

    def __call__(self, record: CoreRecord) -> None:
        x = record.extra

        def num(name: str) -> float | None:
            try:
                return float(x[name]) if name in x else None
            except ValueError:
                return None

        top = num("top_class")
        self.writer.submit(
            RequestRecord(
                request_id=record.request_id,
                device_id=record.device_id,
                model_name=record.model_name,
                model_version=record.model_version,
                route="cache" if record.cached else record.route,
                status=record.status,
                session_id=x.get("session_id", ""),
                deadline_ms=num("deadline_ms"),
                idempotency_key=record.idempotency_key,
                offload_reason=x.get("offload_reason", ""),
                codec=record.codec,
                top_class=None if top is None else int(top),
                confidence=num("confidence"),
                latency_ms=num("latency_ms"),
                bytes_in=record.bytes_in,
                bytes_out=int(num("bytes_out") or 0),
                compute_ms=record.compute_s * 1000.0,
            )
        )
