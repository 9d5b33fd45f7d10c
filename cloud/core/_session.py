"""One device session: reassembly of chunked requests under byte budgets, credits, cancellation.

The transport feeds decoded frames (:class:`RequestHeader`, :class:`Chunk`, cancels) into
:class:`SessionCore`; answers leave through a :class:`SessionSink`. Memory is bounded three ways:
a request's declared size is checked against ``max_request_bytes`` and reserved against the
session budget and the device's quotas and fair share of the global budget
(:mod:`cloud.core._quota`) before a byte is buffered; chunk payloads beyond the credit granted to
the device are refused; a request whose chunks stop arriving is dropped after
``reassembly_timeout_s``. Nothing is ever allocated from a client-declared size.

A header may carry the whole payload inline (``RequestHeader.inline_payload``): one frame instead
of two. It passes the same checks in the same order as a chunked request (size against the
limits first, then credit, budgets, digest/idempotency and decoding) and completes at once; a
chunk that follows it fails the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from cloud.core._dataplane import DataPlane
from cloud.core._quota import DeviceLedger, DeviceQuota, DeviceQuotas
from cloud.core._session_types import (
    ByteBudget,
    Chunk,
    Pending,
    RequestHeader,
    SessionLimits,
    SessionSink,
)
from cloud.core._tenancy import check_payload_digest
from cloud.core._types import InferenceRequest, InferenceResult
from cloud.core._validate import check_payload_format, check_payload_parts
from common.errors import (
    AimlError,
    AlreadyExists,
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger(__name__)


class SessionCore:
    """State of one session: open requests, budgets and credits."""

    def __init__(
        self,
        dataplane: DataPlane,
        limits: SessionLimits,
        global_budget: ByteBudget,
        sink: SessionSink,
        device_id: str,
        session_id: str = "",
        ledger: DeviceLedger | None = None,
        budget_exhausted: Callable[[str], bool] | None = None,
    ) -> None:
        self._dp = dataplane
        self._budget_exhausted = budget_exhausted
        """Whether the device's organisation has spent its cost budget (``accounting.
        steer_offload``): its offloads are then refused, so the device answers locally."""
        self.session_id = session_id
        self.limits = limits
        self._sink = sink
        self.device_id = device_id
        if ledger is None:  # no per-device quota: only the global budget applies
            ledger = DeviceQuotas(DeviceQuota.unlimited(), global_budget).open_session(device_id)
        self._ledger = ledger  # the device's quotas, shared with its other sessions
        self._open: dict[str, Pending] = {}
        self._reserved = 0  # bytes reserved by requests still reassembling
        self._credit_left = limits.max_session_buffer_bytes
        self._grant_bytes = 0
        self._grant_requests = 0
        self._grant_threshold = max(1, limits.max_session_buffer_bytes // 4)
        self._request_threshold = max(1, limits.max_inflight_requests // 4)
        self.draining = False

    @property
    def initial_credit_bytes(self) -> int:
        """Byte credit granted with Welcome."""
        return self.limits.max_session_buffer_bytes

    @property
    def inflight(self) -> int:
        """Requests open on this session (reassembling, queued or computing)."""
        return len(self._open)

    @property
    def buffered_bytes(self) -> int:
        """Bytes reserved for requests still reassembling."""
        return self._reserved

    # -- frames ------------------------------------------------------------------------------

    def on_header(self, h: RequestHeader) -> None:
        """Open a request; answers InferError at once when it cannot be accepted. A header with
        an inline payload is also completed (decoded and submitted) at once."""
        n = len(h.inline_payload)
        try:
            self._ledger.take_token()
            if n:
                self._take_inline_credit(h, n)  # returned with the answer, even a refusal
            if self._budget_exhausted is not None and self._budget_exhausted(self.device_id):
                raise ResourceExhausted(
                    "the organisation's cost budget for this period is spent "
                    "(accounting.steer_offload): answer on the device"
                )
            p = self._open_request(h)
        except AimlError as exc:
            self._maybe_grant()
            self.reject(h.request_id, h.model_name, exc)
            return
        if n:
            p.inline = True
            p.parts.append(h.inline_payload)
            p.received = n
            self._complete(p)

    def _take_inline_credit(self, h: RequestHeader, n: int) -> None:
        # The bytes count against the credit whatever happens next (the device has counted them),
        # unless they exceed it: then, as for a chunk, the device broke the protocol.
        over_credit = n > self._credit_left
        if not over_credit:
            self._credit_left -= n
            self._grant_bytes += n  # returned like chunk bytes, once the request leaves
        # The size limit is checked before anything else looks at the bytes.
        if n > self.limits.max_request_bytes:
            raise ResourceExhausted(
                f"inline payload of {n} bytes exceeds max_request_bytes "
                f"{self.limits.max_request_bytes}"
            )
        if over_credit:
            raise ResourceExhausted("inline payload exceeds the byte credit granted")
        if n != h.total_bytes:
            raise InvalidArgument(
                f"InferHeader.payload carries {n} bytes but total_bytes is {h.total_bytes}; "
                "they must be equal"
            )
        if n > self.limits.max_chunk_bytes:
            raise InvalidArgument(
                f"inline payload of {n} bytes exceeds max_chunk_bytes "
                f"{self.limits.max_chunk_bytes}; send it as TensorChunk frames"
            )

    def _open_request(self, h: RequestHeader) -> Pending:
        lim = self.limits
        if not h.request_id:
            raise InvalidArgument("InferHeader.request_id must not be empty")
        if self.draining:
            raise Unavailable("gateway is draining; reconnect to another gateway")
        if h.request_id in self._open:
            raise AlreadyExists(f"request id {h.request_id!r} is already in flight")
        if len(self._open) >= lim.max_inflight_requests:
            raise ResourceExhausted(
                f"too many requests in flight ({lim.max_inflight_requests}); wait for Credit"
            )
        if h.total_bytes <= 0:
            raise InvalidArgument("InferHeader.total_bytes must be > 0")
        if h.total_bytes > lim.max_request_bytes:
            raise ResourceExhausted(
                f"declared payload of {h.total_bytes} bytes exceeds max_request_bytes "
                f"{lim.max_request_bytes}"
            )
        spec = self._dp.repository.resolve_cut(h.model_name, h.model_version, h.cut_point)
        formats = [p.format for p in h.parts] if h.parts else [h.payload]
        if h.parts:
            check_payload_parts(spec, h.parts, h.total_bytes)
        else:
            check_payload_format(spec, h.payload)
        decoded = sum(f.raw_bytes() for f in formats)
        if decoded > lim.max_request_bytes * 64:
            raise ResourceExhausted(
                f"declared tensor shapes {[list(f.shape) for f in formats]} decode to "
                f"{decoded} bytes, over the gateway's limit"
            )
        if h.deadline is not None and h.deadline <= time.monotonic():
            raise DeadlineExceeded("the request's deadline passed before it was opened")
        if self._reserved + h.total_bytes > lim.max_session_buffer_bytes:
            raise ResourceExhausted(
                f"session buffer full ({self._reserved} of {lim.max_session_buffer_bytes} bytes "
                "reserved by unfinished requests)"
            )
        self._ledger.open_request(h.total_bytes)  # device quotas, fair share, global budget
        self._reserved += h.total_bytes
        p = Pending(h, spec, time.monotonic())
        if not h.inline_payload:  # an inline request completes before it could time out
            p.timer = asyncio.get_running_loop().call_later(
                lim.reassembly_timeout_s, self._expire, h.request_id
            )
        self._open[h.request_id] = p
        return p

    def on_chunk(self, c: Chunk) -> None:
        """Append a chunk; completes the request on ``last``."""
        n = len(c.data)
        if n > self._credit_left:
            # The device sent beyond its credit: refuse to buffer, fail the request.
            self._fail(c.request_id, ResourceExhausted("chunk exceeds the byte credit granted"))
            return
        self._credit_left -= n
        self._grant_bytes += n  # these bytes are returned once the request leaves the buffer
        p = self._open.get(c.request_id)
        if p is not None and p.inline:
            # The header carried the whole payload: a chunk for it breaks the protocol.
            self._fail(
                c.request_id,
                InvalidArgument(
                    f"TensorChunk for request id {c.request_id!r}, whose InferHeader carried its "
                    "payload inline; no TensorChunk may follow an inline payload"
                ),
            )
            return
        if p is None or p.future is not None:
            self._maybe_grant()
            self._sink.error(
                c.request_id, NotFound(f"chunk for unknown request id {c.request_id!r}")
            )
            self._dp.metrics.rejections.labels("NOT_FOUND").inc()
            return
        if n > self.limits.max_chunk_bytes:
            self._fail(c.request_id, InvalidArgument(f"chunk of {n} bytes exceeds max_chunk_bytes"))
            return
        if c.offset != p.received:
            kind = "overlaps" if c.offset < p.received else "leaves a gap after"
            self._fail(
                c.request_id,
                InvalidArgument(
                    f"chunk at offset {c.offset} {kind} the {p.received} bytes received; chunks "
                    "must arrive in order without gaps"
                ),
            )
            return
        if p.received + n > p.header.total_bytes:
            self._fail(
                c.request_id,
                InvalidArgument(
                    f"chunks carry more than the declared total_bytes {p.header.total_bytes}"
                ),
            )
            return
        p.parts.append(c.data)
        p.received += n
        if c.last:
            if p.received != p.header.total_bytes:
                self._fail(
                    c.request_id,
                    InvalidArgument(
                        f"last chunk ends at {p.received} bytes but total_bytes is "
                        f"{p.header.total_bytes}"
                    ),
                )
                return
            self._complete(p)

    def on_cancel(self, request_id: str) -> None:
        """Withdraw a request: buffered bytes and queued work are freed, nothing is answered."""
        p = self._open.get(request_id)
        if p is None:
            return
        self._drop(p)
        if p.future is not None:
            p.future.cancel()
        self._grant_requests += 1
        self._maybe_grant()

    def close(self) -> None:
        """The stream ended: free everything and withdraw queued work."""
        for p in list(self._open.values()):
            self._drop(p)
            if p.future is not None:
                p.future.cancel()
        self._open.clear()

    # -- internals ---------------------------------------------------------------------------

    def _complete(self, p: Pending) -> None:
        h = p.header
        payload = p.parts[0] if len(p.parts) == 1 else b"".join(p.parts)
        self._release(p)
        self._maybe_grant()
        req = InferenceRequest(
            model_name=p.spec.name,
            model_version=h.model_version,  # empty: the rollout (if any) picks the version
            inputs={},
            request_id=h.request_id,
            deadline=h.answer_deadline(),
            priority=h.priority,
            idempotency_key=h.idempotency_key,
            payload_digest=h.payload_digest,
            device_id=self.device_id,
            api="session",
            codec=h.payload.codec_name,
            cut_point=h.cut_point,
            session_id=self.session_id,
            offload_reason="deferred" if h.deferred else "offload",
            region=h.region,
            device_class=h.context.device_class if h.context is not None else "",
            traceparent=h.traceparent,
        )
        p.request = req
        if h.context is not None:  # how sure the device was when it asked the cloud
            m = self._dp.metrics
            m.child(m.offload_confidence, h.model_name, h.context.device_class).observe(
                h.context.confidence
            )
        try:  # a codec frame is decoded off the loop (cloud.core._decoding)
            check_payload_digest(h.payload_digest, payload)
            entropy = self._dp.entropy_models(p.spec)
            fut = self._dp.decoder.submit(self._dp, req, payload, p, entropy)
        except AimlError as exc:
            self._forget(p)
            self._grant_requests += 1
            self._maybe_grant()
            self._sink.error(h.request_id, exc)
            self._dp.record(req, exc.code.value, bytes_in=len(payload))
            return
        p.future = fut
        fut.add_done_callback(lambda f, p=p: self._answer(p, f))  # type: ignore[misc]

    def _answer(self, p: Pending, fut: asyncio.Future[InferenceResult]) -> None:
        rid = p.header.request_id
        if self._open.get(rid) is not p:
            return  # cancelled or the session closed
        self._forget(p)
        self._grant_requests += 1
        self._maybe_grant()
        assert p.request is not None
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            result = dataclasses.replace(fut.result(), decode_s=p.decode_s)
            try:
                self._sink.result(rid, result, p.spec)
            except AimlError as unsendable:  # e.g. larger than the device may receive
                self._sink.error(rid, unsendable)
                self._dp.record(p.request, unsendable.code.value, bytes_in=p.header.total_bytes)
                return
            self._dp.record(p.request, "OK", result, p.header.total_bytes)
            return
        err = exc if isinstance(exc, AimlError) else Unavailable(f"inference failed: {exc}")
        self._sink.error(rid, err)
        self._dp.record(p.request, err.code.value, bytes_in=p.header.total_bytes)

    def _expire(self, request_id: str) -> None:
        p = self._open.get(request_id)
        if p is None or p.future is not None:
            return
        waited = time.monotonic() - p.started
        self._fail(
            request_id,
            DeadlineExceeded(
                f"request not completed within the reassembly timeout "
                f"({waited:.1f} s, {p.received} of {p.header.total_bytes} bytes received)"
            ),
        )

    def _fail(self, request_id: str, error: AimlError) -> None:
        p = self._open.get(request_id)
        model = ""
        if p is not None:
            model = p.spec.name
            self._drop(p)
            if p.future is not None:
                p.future.cancel()  # withdrawn: its answer would contradict this error
            self._grant_requests += 1
        self._maybe_grant()
        self.reject(request_id, model, error)

    def reject(self, request_id: str, model: str, error: AimlError) -> None:
        """Answer ``request_id`` with ``error`` (counted as a rejection)."""
        self._sink.error(request_id, error)
        self._dp.metrics.rejections.labels(error.code.value).inc()
        self._dp.metrics.child(self._dp.metrics.requests, model, "session", error.code.value).inc()

    def _forget(self, p: Pending) -> None:
        if self._open.get(p.header.request_id) is p:
            del self._open[p.header.request_id]
            self._ledger.finish_request()

    def _drop(self, p: Pending) -> None:
        self._forget(p)
        if p.future is None:
            self._release(p)

    def _release(self, p: Pending) -> None:
        if p.timer is not None:
            p.timer.cancel()
            p.timer = None
        p.parts = []
        self._reserved -= p.header.total_bytes
        self._ledger.release_bytes(p.header.total_bytes)

    def _maybe_grant(self) -> None:
        if self._grant_bytes >= self._grant_threshold or self._grant_requests >= (
            self._request_threshold
        ):
            nbytes, nreq = self._grant_bytes, self._grant_requests
            self._grant_bytes = self._grant_requests = 0
            self._credit_left += nbytes
            self._sink.credit(nbytes, nreq)


__all__ = ["ByteBudget", "Chunk", "RequestHeader", "SessionCore", "SessionLimits", "SessionSink"]
