"""The session stream client: one persistent SessionService.Connect stream per agent, shared by
every concurrent request.

It reconnects with exponential backoff and jitter, honours Drain (stops opening requests,
reconnects after ``reconnect_after``, to the alternate endpoint when given), re-sends every
unanswered request on the new stream under its original idempotency key, respects the
negotiated in-flight limit and byte credit, and keeps RTT/bandwidth estimates for the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import grpc
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from common.errors import (
    AimlError,
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    Unavailable,
    error_from_code,
)
from edge_agent import _convert as conv
from edge_agent._netstats import NetStats
from edge_agent._settings import EdgeSettings
from policy import PolicySnapshot

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, initial: float, ceiling: float, jitter: float) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): exponential, capped, with "equal
    jitter" so that a fleet of devices does not reconnect in lock step."""
    base = min(ceiling, initial * (2.0 ** min(attempt, 30)))
    return base * (1.0 - jitter + jitter * random.random())


@dataclasses.dataclass
class _Pending:
    req: conv.OutboundRequest
    future: asyncio.Future[conv.CloudAnswer]
    seq: int
    sends: int = 0
    sent_at: float = 0.0


@dataclasses.dataclass
class _Session:
    call: Any
    welcome: conv.Welcome
    max_inflight: int
    chunk_bytes: int
    credit: int | None
    queue: asyncio.Queue[str]
    changed: asyncio.Event
    ended: asyncio.Event
    open: set[str] = dataclasses.field(default_factory=set)
    draining: conv.Drain | None = None
    pings: dict[int, float] = dataclasses.field(default_factory=dict)

    def notify(self) -> None:
        self.changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            self.changed.clear()
            await self.changed.wait()


def _has_credit(s: _Session, n: int) -> bool:
    return s.credit is None or s.credit >= n


@dataclasses.dataclass
class StreamMetrics:
    """Counters of the session stream client."""

    sessions: int = 0
    connect_failures: int = 0
    drains: int = 0
    sent: int = 0
    resent: int = 0
    answers: int = 0
    errors: int = 0
    bytes_sent: int = 0
    inline_sent: int = 0
    """Requests whose payload went inline in the InferHeader (one frame)."""
    telemetry_frames: int = 0


class SessionClient:
    """Client side of one device session. Use as ``async with SessionClient(...) as client``."""

    def __init__(
        self,
        target: str,
        settings: EdgeSettings,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        on_policy: Callable[[PolicySnapshot], None] | None = None,
        agent_version: str = "0.1.0",
    ) -> None:
        self.target = target
        self.settings = settings
        self._credentials = credentials
        self._on_policy = on_policy
        self._agent_version = agent_version
        self.net = NetStats(
            rtt_s=settings.session.initial_rtt_ms / 1e3,
            bandwidth_bps=settings.session.initial_bandwidth_bps,
        )
        self.metrics = StreamMetrics()
        self._inflight: dict[str, _Pending] = {}
        self._seq = itertools.count()
        self._nonce = itertools.count(1)
        self._session: _Session | None = None
        self._session_id = ""
        self._connected = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False

    # -- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> SessionClient:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def start(self) -> None:
        """Start connecting in the background (idempotent)."""
        if self._supervisor is None:
            self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def close(self) -> None:
        """Close the stream; unanswered requests fail with Unavailable."""
        self._closing = True
        tasks = [t for t in [self._supervisor, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._supervisor = None
        for pending in self._inflight.values():
            if not pending.future.done():
                pending.future.set_exception(Unavailable("session client closed"))
        self._inflight.clear()

    @property
    def connected(self) -> bool:
        """True while a welcomed stream is open and not draining."""
        s = self._session
        return s is not None and s.draining is None

    @property
    def inflight(self) -> int:
        """Requests submitted and not yet answered (sent or waiting to be sent)."""
        return len(self._inflight)

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - like asyncio.wait_for
        """Wait until a stream is welcomed; False on timeout."""
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    # -- requests ----------------------------------------------------------------------------
    def submit(self, req: conv.OutboundRequest) -> asyncio.Future[conv.CloudAnswer]:
        """Queue ``req`` for sending; the future resolves with the gateway's answer or fails
        with an AimlError carrying the gateway's status. Survives reconnects."""
        if req.request_id in self._inflight:
            raise InvalidArgument(f"request id {req.request_id!r} is already in flight")
        fut: asyncio.Future[conv.CloudAnswer] = asyncio.get_running_loop().create_future()
        self._inflight[req.request_id] = _Pending(req, fut, next(self._seq))
        if self._session is not None:
            self._session.queue.put_nowait(req.request_id)
        return fut

    def cancel(self, request_id: str) -> None:
        """Withdraw a request (no answer will be delivered); sends Cancel if it was opened."""
        pending = self._inflight.pop(request_id, None)
        if pending is not None and not pending.future.done():
            pending.future.cancel()
        s = self._session
        if s is not None and request_id in s.open:
            s.open.discard(request_id)
            s.notify()
            self._spawn(self._write(s, conv.cancel(request_id)))

    def send_telemetry(self, frame: session_pb2.ConnectRequest) -> bool:
        """Write a telemetry frame in the background; False when no stream is open."""
        s = self._session
        if s is None:
            return False
        self.metrics.telemetry_frames += 1
        self._spawn(self._write(s, frame))
        return True

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, s: _Session, frame: session_pb2.ConnectRequest) -> None:
        try:
            async with self._write_lock:
                await s.call.write(frame)
        except (grpc.RpcError, asyncio.InvalidStateError, RuntimeError) as exc:
            log.debug("write on closed stream dropped: %s", exc)

    def _channel(self, target: str) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        if self.settings.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.settings.tls.server_name))
        return grpc.aio.secure_channel(target, self._credentials, options=options)

    async def _supervise(self) -> None:
        attempt = 0
        target = self.target
        while not self._closing:
            drain: conv.Drain | None = None
            welcomed = False
            try:
                drain, welcomed = await self._run_session(target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.connect_failures += 1
                if isinstance(exc, grpc.RpcError):
                    exc = conv.error_from_rpc_error(exc)
                log.info("session to %s ended: %s", target, exc)
            finally:
                self._session = None
                self._connected.clear()
            if welcomed:
                attempt = 0
            if drain is not None:
                delay = drain.reconnect_after_s
                if drain.alternate_endpoint:
                    target = drain.alternate_endpoint
            else:
                delay = backoff_delay(
                    attempt,
                    self.settings.session.backoff_initial_s,
                    self.settings.session.backoff_max_s,
                    self.settings.session.backoff_jitter,
                )
                attempt += 1
            log.debug("reconnecting to %s in %.3f s", target, delay)
            await asyncio.sleep(delay)

    async def _open(self, channel: grpc.aio.Channel) -> tuple[Any, conv.Welcome]:
        st = self.settings
        call = session_pb2_grpc.SessionServiceStub(channel).Connect()
        await call.write(
            conv.hello(
                st.device_id,
                st.device_class,
                self._agent_version,
                st.session.max_inflight,
                st.session.max_chunk_bytes,
                self._session_id,
            )
        )
        msg = await asyncio.wait_for(call.read(), st.session.connect_timeout_s)
        welcome = None if msg is grpc.aio.EOF else conv.incoming(msg)
        if not isinstance(welcome, conv.Welcome):
            call.cancel()
            raise Unavailable(f"gateway did not answer Hello with Welcome (got {welcome!r})")
        return call, welcome

    async def _run_session(self, target: str) -> tuple[conv.Drain | None, bool]:
        channel = self._channel(target)
        try:
            call, w = await self._open(channel)
            st = self.settings
            s = _Session(
                call=call,
                welcome=w,
                max_inflight=min(
                    st.session.max_inflight, w.max_inflight or st.session.max_inflight
                ),
                chunk_bytes=min(
                    st.session.max_chunk_bytes, w.max_chunk_bytes or st.session.max_chunk_bytes
                ),
                # A gateway that grants no initial credit does not meter bytes.
                credit=w.initial_credit_bytes or None,
                queue=asyncio.Queue(),
                changed=asyncio.Event(),
                ended=asyncio.Event(),
            )
            self._session_id = w.session_id
            if w.policy is not None and self._on_policy is not None:
                self._on_policy(w.policy)
            # Everything unanswered goes out again, oldest first, under its idempotency key.
            for pending in sorted(self._inflight.values(), key=lambda p: p.seq):
                if not pending.future.done():
                    s.queue.put_nowait(pending.req.request_id)
            self._session = s
            self.metrics.sessions += 1
            self._connected.set()
            log.info("session %s open to %s (device %s)", w.session_id, target, w.device_id)
            ping_s = w.ping_interval_s or st.session.ping_interval_s
            tasks = [
                asyncio.create_task(self._read_loop(s)),
                asyncio.create_task(self._write_loop(s)),
                asyncio.create_task(self._ping_loop(s, ping_s)),
                asyncio.create_task(s.ended.wait()),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                call.cancel()
            for t in done:
                if not t.cancelled() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            return s.draining, True
        finally:
            self._session = None
            await channel.close(grace=None)

    async def _read_loop(self, s: _Session) -> None:
        while True:
            msg = await s.call.read()
            if msg is grpc.aio.EOF:
                return
            item = conv.incoming(msg)
            if isinstance(item, conv.CloudAnswer):
                self._finish(s, item.request_id, item, None)
            elif isinstance(item, conv.CloudFailure):
                err = error_from_code(item.code, f"gateway: {item.message}")
                self._finish(s, item.request_id, None, err)
            elif isinstance(item, conv.Credit):
                if s.credit is not None:
                    s.credit += item.bytes
                s.notify()
            elif isinstance(item, conv.Pong):
                sent = s.pings.pop(item.nonce, None)
                if sent is not None:
                    self.net.observe_rtt(time.monotonic() - sent)
            elif isinstance(item, conv.Drain):
                self._drain(s, item)
            elif isinstance(item, PolicySnapshot) and self._on_policy is not None:
                self._on_policy(item)

    def _finish(
        self,
        s: _Session,
        request_id: str,
        answer: conv.CloudAnswer | None,
        error: AimlError | None,
    ) -> None:
        s.open.discard(request_id)
        s.notify()
        pending = self._inflight.pop(request_id, None)
        if pending is None or pending.future.done():
            return  # cancelled or timed out locally; a late answer is dropped
        if answer is not None:
            self.metrics.answers += 1
            server_s = (answer.queue_ms + answer.cloud_compute_ms + answer.decode_ms) / 1e3
            self.net.observe_transfer(
                len(pending.req.features.payload), time.monotonic() - pending.sent_at, server_s
            )
            pending.future.set_result(answer)
        else:
            self.metrics.errors += 1
            pending.future.set_exception(error or Internal("gateway error"))

    def _drain(self, s: _Session, d: conv.Drain) -> None:
        self.metrics.drains += 1
        s.draining = d
        s.notify()
        log.info(
            "gateway drains session (%s); reconnect after %.2fs", d.reason, d.reconnect_after_s
        )

        async def finish_then_end() -> None:
            limit = (d.close_at - time.time()) if d.close_at else 30.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(s.wait_until(lambda: not s.open), max(limit, 0.0))
            s.ended.set()

        self._spawn(finish_then_end())

    async def _write_loop(self, s: _Session) -> None:
        while True:
            rid = await s.queue.get()
            pending = self._inflight.get(rid)
            if pending is None or pending.future.done():
                continue
            await s.wait_until(lambda: s.draining is None and len(s.open) < s.max_inflight)
            if self._inflight.get(rid) is not pending:
                continue
            if pending.req.deadline <= time.time():
                self._inflight.pop(rid, None)
                pending.future.set_exception(DeadlineExceeded("deadline passed before sending"))
                continue
            s.open.add(rid)
            if pending.sends:
                self.metrics.resent += 1
            pending.sends += 1
            self.metrics.sent += 1
            pending.sent_at = time.monotonic()
            size = len(pending.req.features.payload)
            # One frame instead of two when the gateway takes inline payloads, the payload fits
            # in one chunk and the credit covers it now; otherwise header and chunks as before.
            inline = (
                s.welcome.inline_payloads and 0 < size <= s.chunk_bytes and _has_credit(s, size)
            )
            for frame in conv.infer_frames(pending.req, s.chunk_bytes, inline=inline):
                n = len(frame.infer_header.payload) if inline else len(frame.tensor_chunk.data)
                if n:
                    if s.credit is not None:
                        await s.wait_until(functools.partial(_has_credit, s, n))
                        s.credit -= n
                    self.metrics.inline_sent += int(inline)
                    self.metrics.bytes_sent += n
                async with self._write_lock:
                    await s.call.write(frame)

    async def _ping_loop(self, s: _Session, interval: float) -> None:
        while True:
            now = time.monotonic()
            if any(now - t > 3 * interval for t in s.pings.values()):
                raise Unavailable(f"no Pong for {3 * interval:.1f}s; stream considered dead")
            nonce = next(self._nonce)
            s.pings[nonce] = now
            async with self._write_lock:
                await s.call.write(conv.ping(nonce))
            await asyncio.sleep(interval)


__all__ = ["SessionClient", "StreamMetrics", "backoff_delay"]
