"""aiml021.session.v1.SessionService/Connect: frames in, SessionCore, frames out.

Requests are parsed here from raw bytes (the method is registered without a deserializer) so that
garbage on the stream ends only that stream, with INVALID_ARGUMENT, instead of an opaque
transport error. Writes go through one :class:`Outbox` drained by the response generator
(grpc.aio allows one writer); a device that does not read its answers is no longer read from, then
cut off with RESOURCE_EXHAUSTED. A stream is counted in ``open_streams`` from its first byte, must
send Hello within ``hello_timeout_s`` and ends when idle for ``idle_timeout_s``
(DEADLINE_EXCEEDED); each device's sessions share its quotas (:class:`cloud.core.DeviceQuotas`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from aiml021.session.v1 import session_pb2
from google.protobuf.message import DecodeError

from cloud.core import (
    ByteBudget,
    DataPlane,
    DeviceQuota,
    DeviceQuotas,
    SessionCore,
    SessionLimits,
)
from cloud.grpc._converters import (
    check_frame_request_id,
    chunk_from_pb,
    header_from_pb,
    limits_to_pb,
)
from cloud.grpc._errors import grpc_status, handle_stream
from cloud.grpc._outbox import Outbox, OutboxSink, StreamGuards
from cloud.grpc._peer import device_id_from_context
from cloud.grpc._policy import push_policy_updates, welcome_policy
from cloud.grpc._telemetry import device_report_from_pb, events_from_pb
from common.errors import (
    AimlError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from common.prototime import duration_from_s
from common.telemetry import device_pseudonym
from policy import PolicyPublisher

log = logging.getLogger(__name__)

MAX_HELLO_BUNDLES = 32
"""Most bundles one Hello may declare (Hello.bundles)."""

SERVICE = "aiml021.session.v1.SessionService"
PROTOCOL_VERSION = 1
_CLOSE = object()


class _Stream:
    __slots__ = ("core", "idle_timer", "last_frame", "outbox")

    def __init__(self, core: SessionCore, outbox: Outbox) -> None:
        self.core = core
        self.outbox = outbox
        self.last_frame = asyncio.get_running_loop().time()
        self.idle_timer: asyncio.TimerHandle | None = None


class SessionServicer:
    """Holds every open session; ``drain`` is called on shutdown."""

    def __init__(
        self,
        dataplane: DataPlane,
        limits: SessionLimits,
        global_budget: ByteBudget,
        insecure: bool,
        policies: PolicyPublisher | None = None,
        quotas: DeviceQuotas | None = None,
        guards: StreamGuards | None = None,
        max_request_id_bytes: int = 256,
        budget_exhausted: Callable[[str], bool] | None = None,
    ) -> None:
        self._dp = dataplane
        self._budget_exhausted = budget_exhausted
        self._max_request_id = max_request_id_bytes
        self._policies = policies
        self._limits = limits
        self._insecure = insecure
        self.quotas = quotas or DeviceQuotas(DeviceQuota.unlimited(), global_budget)
        """Every device's sessions, in-flight requests, buffered bytes and request rate."""
        self._guards = guards or StreamGuards()
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
        gauge = self._dp.metrics.open_streams.labels("session")
        gauge.inc()  # counted from its first byte: a stream that never says Hello is seen too
        try:
            hello = await self._hello(it)
            if hello is None:
                return
            async for frame in self._session(it, context, hello, device):
                yield frame
        finally:
            gauge.dec()

    def _tails(self, hello: session_pb2.Hello) -> list[tuple[str, str]]:
        """The tail served for each head the device declares (Hello.bundles): the same version
        of the bundle; FailedPrecondition naming the served versions when there is none."""
        if len(hello.bundles) > MAX_HELLO_BUNDLES:
            raise InvalidArgument(
                f"Hello declares {len(hello.bundles)} bundles (at most {MAX_HELLO_BUNDLES})"
            )
        tails = []
        for b in hello.bundles:
            if not b.model_name or not b.version or len(b.model_name) > 256 or len(b.version) > 128:
                raise InvalidArgument(
                    "Hello.bundles: model_name (<= 256) and version (<= 128) are required"
                )
            if not self._dp.model_ready(b.model_name, b.version):
                served = sorted(
                    s.key.version for s in self._dp.repository.specs() if s.key.name == b.model_name
                )
                raise FailedPrecondition(
                    f"no tail for head {b.model_name!r} version {b.version!r}: this gateway serves "
                    f"versions {served or 'none'} of it; update the device's bundle"
                )
            tails.append((b.model_name, b.version))
        return tails

    async def _hello(self, it: AsyncIterator[bytes]) -> session_pb2.Hello | None:
        timeout = self._guards.hello_timeout_s
        try:
            first = _parse(await asyncio.wait_for(it.__anext__(), timeout))
        except StopAsyncIteration:
            return None
        except TimeoutError:
            raise DeadlineExceeded(
                f"no Hello within {timeout:g} s of opening the stream (session.hello_timeout_s)"
            ) from None
        except DecodeError:
            raise InvalidArgument("malformed first frame") from None
        if first.WhichOneof("frame") != "hello":
            raise InvalidArgument("the first frame must be Hello")
        return first.hello

    async def _session(
        self,
        it: AsyncIterator[bytes],
        context: grpc.aio.ServicerContext,
        hello: session_pb2.Hello,
        device: str,
    ) -> AsyncIterator[session_pb2.ConnectResponse]:
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
        tails = self._tails(hello)  # FAILED_PRECONDITION: a head this gateway has no tail for
        ledger = await self.quotas.enter_session(device)  # RESOURCE_EXHAUSTED past its quota
        outbox = Outbox(self._guards.max_outbound_bytes)
        session_id = uuid.uuid4().hex
        core = SessionCore(
            self._dp,
            limits,
            self.quotas.budget,
            OutboxSink(outbox, self._guards.max_result_bytes),
            device,
            session_id,
            ledger,
            self._budget_exhausted,
        )
        stream = _Stream(core, outbox)
        welcome = session_pb2.ConnectResponse()
        w = welcome.welcome
        w.session_id = session_id
        w.device_id = device
        w.protocol_version = PROTOCOL_VERSION
        w.limits.CopyFrom(limits_to_pb(limits))
        w.initial_credit_bytes = core.initial_credit_bytes
        w.gateway_version = "0.1.0"
        w.inline_payloads = True
        for name, version in tails:
            w.tails.add(model_name=name, version=version)
        stop_policy_updates = None
        if self._policies is not None and caps.accepts_policy_updates:
            policy = welcome_policy(self._policies, hello.device_class, device)
            if policy is not None:
                w.policy.CopyFrom(policy)
            stop_policy_updates = push_policy_updates(
                self._policies, hello.device_class, outbox.put_frame, device
            )
        self._streams.add(stream)
        task = asyncio.current_task()
        assert task is not None
        reader = asyncio.get_running_loop().create_task(self._read(it, stream, context, task))
        self._watch_idle(stream)
        eof = False
        try:
            yield welcome
            while True:
                item = await outbox.get()
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
            if stream.idle_timer is not None:
                stream.idle_timer.cancel()
            self._streams.discard(stream)
            reader.cancel()
            core.close()
            outbox.clear()
            ledger.close_session()

    def _watch_idle(self, stream: _Stream) -> None:
        """End ``stream`` with DEADLINE_EXCEEDED once it sent nothing for ``idle_timeout_s`` while
        nothing of it was in flight (``stream.idle_timer`` is the current timer)."""
        loop = asyncio.get_running_loop()
        timeout = self._guards.idle_timeout_s

        def check() -> None:
            quiet = loop.time() - stream.last_frame
            if quiet >= timeout and stream.core.inflight == 0:
                stream.outbox.put(
                    DeadlineExceeded(
                        f"no frame for {quiet:.0f} s with nothing in flight "
                        f"(session.idle_timeout_s = {timeout:g}); send Ping to keep a session open"
                    )
                )
                return
            stream.idle_timer = loop.call_at(max(stream.last_frame, loop.time()) + timeout, check)

        stream.idle_timer = loop.call_later(timeout, check)

    async def _read(
        self,
        it: AsyncIterator[bytes],
        stream: _Stream,
        context: grpc.aio.ServicerContext,
        task: asyncio.Task[Any],
    ) -> None:
        core, outbox = stream.core, stream.outbox
        loop = asyncio.get_running_loop()
        try:
            while True:
                # Backpressure: a device that does not read its answers is not read from either.
                if outbox.full and not await outbox.wait_room(self._guards.outbound_stall_s):
                    self._cut_off(stream, context, task)
                    return
                try:
                    raw = await it.__anext__()
                except StopAsyncIteration:
                    break
                stream.last_frame = loop.time()
                try:
                    msg = _parse(raw)
                except DecodeError:
                    outbox.put(_StreamFault("malformed frame: not a ConnectRequest"))
                    return
                kind = msg.WhichOneof("frame")
                try:  # an id too long to echo in InferError breaks the protocol: the stream ends
                    check_frame_request_id(msg, self._max_request_id)
                except InvalidArgument as exc:
                    outbox.put(_StreamFault(exc.message))
                    return
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
                        await self.quotas.ready(core.device_id)  # a shared token leased here
                        core.on_header(header)
                    elif kind == "cancel":
                        core.on_cancel(msg.cancel.request_id)
                    elif kind == "ping":
                        pong = session_pb2.ConnectResponse()
                        pong.pong.nonce = msg.ping.nonce
                        pong.pong.ping_sent_at.CopyFrom(msg.ping.sent_at)
                        outbox.put_frame(pong)
                    elif kind == "telemetry_batch":
                        batch = msg.telemetry_batch
                        self._dp.record_telemetry(
                            events_from_pb(batch, core.device_id, core.session_id),
                            int(batch.dropped),
                        )
                        self._dp.report_device(device_report_from_pb(batch, core.device_id))
                    elif kind == "hello":
                        outbox.put(_StreamFault("Hello may only be the first frame"))
                        return
                    else:
                        outbox.put(_StreamFault("frame carries no known field"))
                        return
                except AimlError as exc:
                    log.warning("session %s: %s", device_pseudonym(core.device_id), exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transport ended abnormally (client went away)
            log.debug("session %s read ended: %s", device_pseudonym(core.device_id), exc)
        outbox.put(_CLOSE)

    def _cut_off(
        self, stream: _Stream, context: grpc.aio.ServicerContext, task: asyncio.Task[Any]
    ) -> None:
        """End a stream whose device stopped reading: the writer is stuck in a flow-controlled
        write, so the status is sent from here (the device sees it once it reads again) and the
        stream's task is cancelled, which frees the session at once."""
        err = ResourceExhausted(
            f"the device does not read its answers: {stream.outbox.queued_bytes} bytes queued "
            f"for over {self._guards.outbound_stall_s:g} s (session.max_outbound_bytes = "
            f"{stream.outbox.max_bytes}, session.outbound_stall_s)"
        )
        log.warning(
            "session %s of %s: %s",
            stream.core.session_id,
            device_pseudonym(stream.core.device_id),
            err,
        )
        self._dp.metrics.rejections.labels(err.code.value).inc()
        stream.outbox.clear()
        abort = asyncio.ensure_future(context.abort(grpc_status(err), err.message))
        abort.add_done_callback(_retrieve)  # it raises AbortError once the status is sent
        asyncio.get_running_loop().call_soon(task.cancel)  # after abort queued the status

    async def drain(self, reason: str, grace_s: float) -> None:
        """Send Drain on every stream, let in-flight work finish (up to ``grace_s``), close."""
        self._draining = True
        close_at = session_pb2.ConnectResponse()
        close_at.drain.reason = reason
        close_at.drain.reconnect_after.CopyFrom(duration_from_s(1.0))
        for s in list(self._streams):
            s.core.draining = True
            s.outbox.put_frame(close_at)
        loop = asyncio.get_running_loop()
        until = loop.time() + grace_s
        # Polling: in-flight counts of many sessions change from batcher callbacks.
        while any(s.core.inflight for s in self._streams) and loop.time() < until:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        for s in list(self._streams):
            s.outbox.put(_CLOSE)


class _StreamFault(InvalidArgument):
    """A stream-level fault: the stream ends with INVALID_ARGUMENT."""


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


def _parse(raw: bytes) -> session_pb2.ConnectRequest:
    msg = session_pb2.ConnectRequest()
    msg.ParseFromString(raw)
    return msg


def _replace(limits: SessionLimits, **kw: int) -> SessionLimits:
    import dataclasses

    return dataclasses.replace(limits, **kw)


__all__ = ["PROTOCOL_VERSION", "SERVICE", "SessionServicer"]
