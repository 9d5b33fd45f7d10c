"""aiml021.session.v1.SessionService/Connect: frames in, SessionCore, frames out.

Requests are parsed here from raw bytes (the method is registered without a deserializer) so that
garbage on the stream ends only that stream, with INVALID_ARGUMENT, instead of an opaque
transport error. Writes go through one queue drained by the response generator (grpc.aio allows
one writer).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from aiml021.session.v1 import session_pb2
from google.protobuf.message import DecodeError

from cloud.core import ByteBudget, DataPlane, InferenceResult, ModelSpec, SessionCore, SessionLimits
from cloud.grpc._converters import chunk_from_pb, header_from_pb, limits_to_pb, result_to_pb
from cloud.grpc._errors import handle_stream, rpc_status
from cloud.grpc._policy import push_policy_updates, welcome_policy
from cloud.grpc._peer import device_id_from_context
from cloud.grpc._telemetry import events_from_pb
from common.errors import (
    AimlError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from common.prototime import duration_from_s
from policy import PolicyPublisher

log = logging.getLogger(__name__)

SERVICE = "aiml021.session.v1.SessionService"
PROTOCOL_VERSION = 1
_CLOSE = object()


class _Sink:
    """SessionSink writing ConnectResponse frames into the stream's queue."""

    __slots__ = ("queue",)

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue

    def result(self, request_id: str, result: InferenceResult, spec: ModelSpec) -> None:
        self.queue.put_nowait(result_to_pb(request_id, result, spec))

    def error(self, request_id: str, error: AimlError) -> None:
        msg = session_pb2.ConnectResponse()
        msg.infer_error.request_id = request_id
        msg.infer_error.status.CopyFrom(rpc_status(error))
        self.queue.put_nowait(msg)

    def credit(self, nbytes: int, requests: int) -> None:
        msg = session_pb2.ConnectResponse()
        msg.credit.bytes = nbytes
        msg.credit.requests = requests
        self.queue.put_nowait(msg)


class _Stream:
    __slots__ = ("core", "queue")

    def __init__(self, core: SessionCore, queue: asyncio.Queue[Any]) -> None:
        self.core = core
        self.queue = queue


class SessionServicer:
    """Holds every open session; ``drain`` is called on shutdown."""

    def __init__(
        self,
        dataplane: DataPlane,
        limits: SessionLimits,
        global_budget: ByteBudget,
        insecure: bool,
        policies: PolicyPublisher | None = None,
    ) -> None:
        self._dp = dataplane
        self._policies = policies
        self._limits = limits
        self._budget = global_budget
        self._insecure = insecure
        self._streams: set[_Stream] = set()
        self._draining = False

    @property
    def open_sessions(self) -> int:
        """Sessions currently open."""
        return len(self._streams)

    def handler(self) -> grpc.GenericRpcHandler:
        """Generic handler registering Connect with raw request bytes."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Connect": grpc.stream_stream_rpc_method_handler(
                    self.Connect,
                    request_deserializer=None,
                    response_serializer=session_pb2.ConnectResponse.SerializeToString,
                )
            },
        )

    @handle_stream
    async def Connect(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[session_pb2.ConnectResponse]:
        device = device_id_from_context(context)
        if not device and not self._insecure:
            raise Unauthenticated("a client certificate is required")
        it = request_iterator.__aiter__()
        try:
            first = _parse(await it.__anext__())
        except StopAsyncIteration:
            return
        except DecodeError:
            raise InvalidArgument("malformed first frame") from None
        if first.WhichOneof("frame") != "hello":
            raise InvalidArgument("the first frame must be Hello")
        hello = first.hello
        if hello.protocol_version not in (0, PROTOCOL_VERSION):
            raise FailedPrecondition(
                f"protocol version {hello.protocol_version} unsupported (gateway speaks "
                f"{PROTOCOL_VERSION})"
            )
        if device and hello.device_id and hello.device_id != device:
            raise PermissionDenied(
                f"Hello.device_id {hello.device_id!r} disagrees with the certificate ({device!r})"
            )
        if not device:
            device = hello.device_id or "anonymous"
        if self._draining:
            raise Unavailable("gateway is draining")
        limits = self._limits
        caps = hello.capabilities
        if caps.max_inflight_requests:
            limits = _replace(
                limits,
                max_inflight_requests=min(caps.max_inflight_requests, limits.max_inflight_requests),
            )
        if caps.max_chunk_bytes:
            limits = _replace(
                limits, max_chunk_bytes=min(caps.max_chunk_bytes, limits.max_chunk_bytes)
            )
        queue: asyncio.Queue[Any] = asyncio.Queue()
        session_id = uuid.uuid4().hex
        core = SessionCore(self._dp, limits, self._budget, _Sink(queue), device, session_id)
        stream = _Stream(core, queue)
        welcome = session_pb2.ConnectResponse()
        w = welcome.welcome
        w.session_id = session_id
        w.device_id = device
        w.protocol_version = PROTOCOL_VERSION
        w.limits.CopyFrom(limits_to_pb(limits))
        w.initial_credit_bytes = core.initial_credit_bytes
        w.gateway_version = "0.1.0"
        w.inline_payloads = True
        stop_policy_updates = None
        if self._policies is not None and caps.accepts_policy_updates:
            policy = welcome_policy(self._policies, hello.device_class)
            if policy is not None:
                w.policy.CopyFrom(policy)
            stop_policy_updates = push_policy_updates(
                self._policies, hello.device_class, queue.put_nowait
            )
        self._streams.add(stream)
        gauge = self._dp.metrics.open_streams.labels("session")
        gauge.inc()
        reader = asyncio.get_running_loop().create_task(self._read(it, core, queue))
        eof = False
        try:
            yield welcome
            while True:
                item = await queue.get()
                if item is _CLOSE:
                    if core.inflight == 0 or self._draining:
                        break
                    eof = True
                    continue
                if isinstance(item, AimlError):
                    raise item  # a stream-level fault ends the stream (handle_stream aborts)
                yield item
                if eof and core.inflight == 0:
                    break
        finally:
            if stop_policy_updates is not None:
                stop_policy_updates()
            gauge.dec()
            self._streams.discard(stream)
            reader.cancel()
            core.close()

    async def _read(
        self, it: AsyncIterator[bytes], core: SessionCore, queue: asyncio.Queue[Any]
    ) -> None:
        try:
            async for raw in it:
                try:
                    msg = _parse(raw)
                except DecodeError:
                    queue.put_nowait(_StreamFault("malformed frame: not a ConnectRequest"))
                    return
                kind = msg.WhichOneof("frame")
                try:
                    if kind == "tensor_chunk":
                        core.on_chunk(chunk_from_pb(msg.tensor_chunk))
                    elif kind == "infer_header":
                        try:
                            header = header_from_pb(msg.infer_header)
                        except AimlError as exc:
                            core.reject(
                                msg.infer_header.request_id, msg.infer_header.model_name, exc
                            )
                            continue
                        core.on_header(header)
                    elif kind == "cancel":
                        core.on_cancel(msg.cancel.request_id)
                    elif kind == "ping":
                        pong = session_pb2.ConnectResponse()
                        pong.pong.nonce = msg.ping.nonce
                        pong.pong.ping_sent_at.CopyFrom(msg.ping.sent_at)
                        queue.put_nowait(pong)
                    elif kind == "telemetry_batch":
                        batch = msg.telemetry_batch
                        self._dp.record_telemetry(
                            events_from_pb(batch, core.device_id, core.session_id),
                            int(batch.dropped),
                        )
                    elif kind == "hello":
                        queue.put_nowait(_StreamFault("Hello may only be the first frame"))
                        return
                    else:
                        queue.put_nowait(_StreamFault("frame carries no known field"))
                        return
                except AimlError as exc:
                    log.warning("session %s: %s", core.device_id, exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transport ended abnormally (client went away)
            log.debug("session %s read ended: %s", core.device_id, exc)
        queue.put_nowait(_CLOSE)

    async def drain(self, reason: str, grace_s: float) -> None:
        """Send Drain on every stream, let in-flight work finish (up to ``grace_s``), close."""
        self._draining = True
        close_at = session_pb2.ConnectResponse()
        close_at.drain.reason = reason
        close_at.drain.reconnect_after.CopyFrom(duration_from_s(1.0))
        for s in list(self._streams):
            s.core.draining = True
            s.queue.put_nowait(close_at)
        loop = asyncio.get_running_loop()
        until = loop.time() + grace_s
        # Polling: in-flight counts of many sessions change from batcher callbacks.
        while any(s.core.inflight for s in self._streams) and loop.time() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for s in list(self._streams):
            s.queue.put_nowait(_CLOSE)


class _StreamFault(InvalidArgument):
    """A stream-level fault: the stream ends with INVALID_ARGUMENT."""


def _parse(raw: bytes) -> session_pb2.ConnectRequest:
    msg = session_pb2.ConnectRequest()
    msg.ParseFromString(raw)
    return msg


def _replace(limits: SessionLimits, **kw: int) -> SessionLimits:
    import dataclasses

    return dataclasses.replace(limits, **kw)


__all__ = ["PROTOCOL_VERSION", "SERVICE", "SessionServicer"]
