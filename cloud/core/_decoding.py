"""Decoding session payloads off the event loop, on a bounded thread pool.

A raw payload (exactly the declared elements) costs a view and is taken at once. A codec frame
(quantised, sparse, entropy- or zstd-coded) costs CPU in proportion to the tensor it declares, so
it is decoded on :class:`PayloadDecoder`'s threads while the loop keeps serving other devices;
zstd, numpy and the ANS/range coders release the GIL for the heavy part. At most
``max_waiting`` frames wait for a thread (each holds its payload); past that a request is
refused with RESOURCE_EXHAUSTED instead of queueing memory without bound. What a frame may
decode to is bounded before a thread ever sees it: its header must declare the dtype and shape the
request's InferHeader declared, which was checked against the model (``decode_payload``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from cloud._metrics import GatewayMetrics
from cloud.core._codec import PayloadFormat, decode_payload, split_payload
from cloud.core._session_types import Pending
from cloud.core._types import InferenceRequest, InferenceResult, ModelSpec
from common.errors import InvalidArgument, ResourceExhausted


class DataPlane(Protocol):
    """What the decoder needs of ``cloud.core.DataPlane``."""

    metrics: GatewayMetrics

    def submit(
        self, request: InferenceRequest, spec: ModelSpec | None = None, rows: int | None = None
    ) -> asyncio.Future[InferenceResult]: ...


class PayloadDecoder:
    """Decodes session payloads and submits them to the data plane (``threads`` decoding at
    once, at most ``max_waiting`` frames waiting for a thread)."""

    def __init__(self, threads: int = 2, max_waiting: int = 64, max_bytes: int = 256 << 20):
        self.threads = threads
        self.max_waiting = max_waiting
        self.max_bytes = max_bytes
        """Ceiling of any frame's declared size (the declared shape binds it much lower)."""
        self._pool: ThreadPoolExecutor | None = None
        self.waiting = 0
        """Frames queued for or being decoded on the pool now."""

    def submit(
        self, dp: DataPlane, req: InferenceRequest, payload: bytes, p: Pending, entropy: Any
    ) -> asyncio.Future[InferenceResult]:
        """Decode ``payload`` as ``p`` declared, put the tensors in ``req`` and submit it; the
        future resolves to the result. A raw payload is submitted at once (errors raise here); a
        frame is decoded on the pool first (its errors resolve the future). Sets ``p.decode_s``.
        A multi-tensor payload (``InferHeader.parts``) is split and each part decoded as its own
        header declared."""
        if all(fmt.is_raw and len(b) == fmt.raw_bytes() for fmt, b in _pieces(p, payload)):
            return _submit(dp, req, p, self._decode(dp, req, payload, p, entropy))
        if self.waiting >= self.max_waiting:
            raise ResourceExhausted(
                f"{self.waiting} coded payloads are waiting to be decoded (the gateway's limit); "
                "retry later"
            )
        return asyncio.ensure_future(self._off_loop(dp, req, payload, p, entropy))

    async def _off_loop(
        self, dp: DataPlane, req: InferenceRequest, payload: bytes, p: Pending, entropy: Any
    ) -> InferenceResult:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")
        self.waiting += 1
        try:
            loop = asyncio.get_running_loop()
            arrs = await loop.run_in_executor(
                self._pool, self._decode, dp, req, payload, p, entropy
            )
        finally:
            self.waiting -= 1
        del payload  # the frame's bytes go before the computation
        return await _submit(dp, req, p, arrs)

    def _decode(
        self, dp: DataPlane, req: InferenceRequest, payload: bytes, p: Pending, entropy: Any
    ) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        arrs: dict[str, np.ndarray] = {}
        names = [part.name for part in p.header.parts] or [p.spec.inputs[0].name]
        ranks = {t.name: len(t.shape) for t in p.spec.inputs}
        pieces = _pieces(p, payload)
        m = dp.metrics
        try:
            for name, (fmt, piece) in zip(names, pieces, strict=True):
                arr = decode_payload(piece, fmt, self.max_bytes, entropy)
                arrs[name] = arr[None] if arr.ndim == ranks[name] - 1 else arr
        finally:
            # Each frame names its codec once it was read (a part not reached keeps the name its
            # header gave); bytes are counted per part under that name, so the metric's labels
            # stay the codecs' names, never their combinations.
            req.codec = "+".join(fmt.codec_name for fmt, _ in pieces)
            for fmt, piece in pieces:
                m.child(m.bytes_received, fmt.codec_name).inc(len(piece))
        p.decode_s = time.perf_counter() - t0
        if len({a.shape[0] for a in arrs.values()}) > 1:
            raise InvalidArgument("InferHeader.parts decode to different batch sizes")
        return arrs

    def close(self) -> None:
        """Stop the threads (decodes in progress finish; nothing waits for them)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _pieces(p: Pending, payload: bytes) -> list[tuple[PayloadFormat, bytes]]:
    """(declared format, bytes) of each tensor of the request."""
    parts = p.header.parts
    if not parts:
        return [(p.header.payload, payload)]
    return list(zip([part.format for part in parts], split_payload(payload, parts), strict=True))


def _submit(
    dp: DataPlane, req: InferenceRequest, p: Pending, arrs: dict[str, np.ndarray]
) -> asyncio.Future[InferenceResult]:
    req.inputs = arrs
    rows = next(iter(arrs.values())).shape[0]
    return dp.submit(req, p.spec, rows=rows)  # checked at the header


__all__ = ["PayloadDecoder"]
