"""One welcomed ``SessionService.Connect`` stream of a device session: the in-flight limit and
byte credit the gateway granted, the requests open on it, and its read, write and ping loops.

The :class:`SessionClient` (``edge_agent._stream``) opens one per (re)connect and shares with it
the table of unanswered requests, which outlives every connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import grpc
from aiml021.session.v1 import session_pb2

from common.errors import AimlError, DeadlineExceeded, Internal, Unavailable, error_from_code
from edge_agent import _convert as conv
from edge_agent._netstats import NetStats
from edge_agent._settings import EdgeSettings
from policy import PolicySnapshot

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Pending:
    """A submitted request waiting for its answer, across reconnects."""

    req: conv.OutboundRequest
    future: asyncio.Future[conv.CloudAnswer]
    seq: int
    """Submission order: unanswered requests are re-sent oldest first."""
    sends: int = 0
    sent_at: float = 0.0


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


class Connection:
    """The loops of one stream. ``inflight`` is the client's table of unanswered requests
    (answers resolve and remove its entries); ``on_policy`` receives pushed policies."""

    def __init__(
        self,
        call: Any,
        welcome: conv.Welcome,
        settings: EdgeSettings,
        *,
        inflight: dict[str, Pending],
        metrics: StreamMetrics,
        net: NetStats,
        on_policy: Callable[[PolicySnapshot], None] | None = None,
    ) -> None:
        st = settings.session
        self.call = call
        self.welcome = welcome
        self.max_inflight = min(st.max_inflight, welcome.max_inflight or st.max_inflight)
        self.chunk_bytes = min(st.max_chunk_bytes, welcome.max_chunk_bytes or st.max_chunk_bytes)
        # A gateway that grants no initial credit does not meter bytes.
        self.credit: int | None = welcome.initial_credit_bytes or None
        self.open: set[str] = set()
        """Requests sent on this stream and not yet answered."""
        self.draining: conv.Drain | None = None
        self._inflight = inflight
        self._metrics = metrics
        self._net = net
        self._on_policy = on_policy
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._changed = asyncio.Event()
        self._ended = asyncio.Event()
        self._pings: dict[int, float] = {}
        self._nonce = itertools.count(1)
        self._write_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def enqueue(self, request_id: str) -> None:
        """Send request ``request_id`` (from the in-flight table) when limits allow."""
        self._queue.put_nowait(request_id)

    def notify(self) -> None:
        """Something a waiting sender depends on changed (credit, open requests, drain)."""
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, looking again after each :meth:`notify`."""
        while not predicate():
            self._changed.clear()
            await self._changed.wait()

    def has_credit(self, n: int) -> bool:
        """True when ``n`` payload bytes may be sent now (always, when bytes are not metered)."""
        return self.credit is None or self.credit >= n

    async def write(self, frame: session_pb2.ConnectRequest) -> None:
        """Write one frame outside the send loop (cancel, telemetry); dropped when the stream
        is already closed."""
        try:
            async with self._write_lock:
                await self.call.write(frame)
        except (grpc.RpcError, asyncio.InvalidStateError, RuntimeError) as exc:
            log.debug("write on closed stream dropped: %s", exc)

    async def run(self, ping_interval: float) -> None:
        """Read, write and ping until the stream ends, fails (raised) or a drain completes."""
        tasks = [
            asyncio.create_task(self._read_loop()),
            asyncio.create_task(self._write_loop()),
            asyncio.create_task(self._ping_loop(ping_interval)),
            asyncio.create_task(self._ended.wait()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in [*tasks, *self._tasks]:
                t.cancel()
            await asyncio.gather(*tasks, *self._tasks, return_exceptions=True)
            self.call.cancel()
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()  # type: ignore[misc]

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_loop(self) -> None:
        while True:
            msg = await self.call.read()
            if msg is grpc.aio.EOF:
                return
            item = conv.incoming(msg)
            if isinstance(item, conv.CloudAnswer):
                self._finish(item.request_id, item, None)
            elif isinstance(item, conv.CloudFailure):
                err = error_from_code(item.code, f"gateway: {item.message}")
                self._finish(item.request_id, None, err)
            elif isinstance(item, conv.Credit):
                if self.credit is not None:
                    self.credit += item.bytes
                self.notify()
            elif isinstance(item, conv.Pong):
                sent = self._pings.pop(item.nonce, None)
                if sent is not None:
                    self._net.observe_rtt(time.monotonic() - sent)
            elif isinstance(item, conv.Drain):
                self._drain(item)
            elif isinstance(item, PolicySnapshot) and self._on_policy is not None:
                self._on_policy(item)

    def _finish(
        self, request_id: str, answer: conv.CloudAnswer | None, error: AimlError | None
    ) -> None:
        self.open.discard(request_id)
        self.notify()
        pending = self._inflight.pop(request_id, None)
        if pending is None or pending.future.done():
            return  # cancelled or timed out locally; a late answer is dropped
        if answer is not None:
            self._metrics.answers += 1
            server_s = (answer.queue_ms + answer.cloud_compute_ms + answer.decode_ms) / 1e3
            self._net.observe_transfer(
                len(pending.req.features.payload), time.monotonic() - pending.sent_at, server_s
            )
            pending.future.set_result(answer)
        else:
            self._metrics.errors += 1
            pending.future.set_exception(error or Internal("gateway error"))

    def finish(self, reason: str) -> None:
        """End this stream on the device's initiative, as a gateway Drain would: no new
        request is sent on it, those open finish, then the client reconnects at once (with a
        new Hello, e.g. declaring another bundle version)."""
        if self.draining is None:
            log.info("ending session stream: %s", reason)
            self._drain(conv.Drain(reason, 0.0, "", None), by_gateway=False)

    def _drain(self, d: conv.Drain, by_gateway: bool = True) -> None:
        self.draining = d
        self.notify()
        if by_gateway:
            self._metrics.drains += 1
            log.info(
                "gateway drains session (%s); reconnect after %.2fs", d.reason, d.reconnect_after_s
            )

        async def finish_then_end() -> None:
            limit = (d.close_at - time.time()) if d.close_at else 30.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wait_until(lambda: not self.open), max(limit, 0.0))
            self._ended.set()

        self._spawn(finish_then_end())

    async def _write_loop(self) -> None:
        while True:
            rid = await self._queue.get()
            pending = self._inflight.get(rid)
            if pending is None or pending.future.done():
                continue
            await self.wait_until(
                lambda: self.draining is None and len(self.open) < self.max_inflight
            )
            if self._inflight.get(rid) is not pending:
                continue
            if pending.req.deadline <= time.time():
                self._inflight.pop(rid, None)
                pending.future.set_exception(DeadlineExceeded("deadline passed before sending"))
                continue
            self.open.add(rid)
            if pending.sends:
                self._metrics.resent += 1
            pending.sends += 1
            self._metrics.sent += 1
            pending.sent_at = time.monotonic()
            await self._send(pending)

    async def _send(self, pending: Pending) -> None:
        size = len(pending.req.features.payload)
        # One frame instead of two when the gateway takes inline payloads, the payload fits
        # in one chunk and the credit covers it now; otherwise header and chunks.
        inline = (
            self.welcome.inline_payloads and 0 < size <= self.chunk_bytes and self.has_credit(size)
        )
        for frame in conv.infer_frames(pending.req, self.chunk_bytes, inline=inline):
            n = len(frame.infer_header.payload) if inline else len(frame.tensor_chunk.data)
            if n:
                if self.credit is not None:
                    await self.wait_until(functools.partial(self.has_credit, n))
                    self.credit -= n
                self._metrics.inline_sent += int(inline)
                self._metrics.bytes_sent += n
            async with self._write_lock:
                await self.call.write(frame)

    async def _ping_loop(self, interval: float) -> None:
        while True:
            now = time.monotonic()
            if any(now - t > 3 * interval for t in self._pings.values()):
                raise Unavailable(f"no Pong for {3 * interval:.1f}s; stream considered dead")
            nonce = next(self._nonce)
            self._pings[nonce] = now
            async with self._write_lock:
                await self.call.write(conv.ping(nonce))
            await asyncio.sleep(interval)


__all__ = ["Connection", "Pending", "StreamMetrics"]
