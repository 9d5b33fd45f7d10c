"""The session stream client: one persistent SessionService.Connect stream per agent, shared by
every concurrent request.

It reconnects with exponential backoff and jitter, honours Drain (stops opening requests,
reconnects after ``reconnect_after``, to the alternate endpoint when given), re-sends every
unanswered request on the new stream under its original idempotency key, and keeps RTT/bandwidth
estimates for the policy. Each welcomed stream is an ``edge_agent._connection.Connection``, which
respects the negotiated in-flight limit and byte credit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeAlias

import grpc
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from common.errors import FailedPrecondition, InvalidArgument, Unavailable
from edge_agent import _convert as conv
from edge_agent._connection import Connection, Pending, StreamMetrics
from edge_agent._enrollment import DeviceCertificate
from edge_agent._netstats import NetStats
from edge_agent._settings import EdgeSettings
from policy import PolicySnapshot

log = logging.getLogger(__name__)


Credentials: TypeAlias = grpc.ChannelCredentials | Callable[[], grpc.ChannelCredentials]
"""Channel credentials, or a function giving the current ones (read again for every connection,
so a renewed device certificate is presented on the next reconnect)."""


def channel_credentials(settings: EdgeSettings) -> grpc.ChannelCredentials | None:
    """mTLS credentials from ``settings.tls.dir`` (None for an insecure channel); the key file
    must be readable by its owner only and belong to the certificate."""
    if settings.tls.insecure or settings.tls.dir is None:
        return None
    return DeviceCertificate(settings).credentials()


def backoff_delay(attempt: int, initial: float, ceiling: float, jitter: float) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): exponential, capped, with "equal
    jitter" so that a fleet of devices does not reconnect in lock step."""
    base = min(ceiling, initial * (2.0 ** min(attempt, 30)))
    return base * (1.0 - jitter + jitter * random.random())


class SessionClient:
    """Client side of one device session. Use as ``async with SessionClient(...) as client``."""

    def __init__(
        self,
        target: str,
        settings: EdgeSettings,
        *,
        credentials: Credentials | None = None,
        on_policy: Callable[[PolicySnapshot], None] | None = None,
        agent_version: str = "0.1.0",
        bundles: list[tuple[str, str]] | None = None,
        on_refused: Callable[[FailedPrecondition], None] | None = None,
    ) -> None:
        self.target = target
        self.bundles: list[tuple[str, str]] = list(bundles or [])
        """(model name, head version) pairs declared in Hello: the gateway serves their tails
        or refuses the session (default: the pinned ``model_name``/``model_version``)."""
        if not self.bundles and settings.model_name and settings.model_version:
            self.bundles = [(settings.model_name, settings.model_version)]
        self._on_refused = on_refused
        """Called when the gateway refuses a Hello (not one of :meth:`renegotiate`)."""
        self._negotiation: tuple[list[tuple[str, str]], asyncio.Future[None]] | None = None
        self.settings = settings
        self._credentials = credentials
        self._on_policy = on_policy
        self._agent_version = agent_version
        self.net = NetStats(
            rtt_s=settings.session.initial_rtt_ms / 1e3,
            bandwidth_bps=settings.session.initial_bandwidth_bps,
        )
        self.metrics = StreamMetrics()
        self._inflight: dict[str, Pending] = {}
        self._seq = itertools.count()
        self._conn: Connection | None = None
        self._session_id = ""
        self._connected = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self._declared: list[tuple[str, str]] = []

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
        s = self._conn
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
        self._inflight[req.request_id] = Pending(req, fut, next(self._seq))
        if self._conn is not None:
            self._conn.enqueue(req.request_id)
        return fut

    def cancel(self, request_id: str) -> None:
        """Withdraw a request (no answer will be delivered); sends Cancel if it was opened."""
        pending = self._inflight.pop(request_id, None)
        if pending is not None and not pending.future.done():
            pending.future.cancel()
        s = self._conn
        if s is not None and request_id in s.open:
            s.open.discard(request_id)
            s.notify()
            self._spawn(s.write(conv.cancel(request_id)))

    def send_telemetry(self, frame: session_pb2.ConnectRequest) -> bool:
        """Write a telemetry frame in the background; False when no stream is open."""
        s = self._conn
        if s is None:
            return False
        self.metrics.telemetry_frames += 1
        self._spawn(s.write(frame))
        return True

    async def renegotiate(self, bundles: list[tuple[str, str]], timeout: float) -> None:  # noqa: ASYNC109 - like asyncio.wait_for
        """Declare ``bundles`` from now on: the open stream finishes the requests sent on it
        (new ones wait), then the session says Hello again with the new declaration. Raises
        FailedPrecondition when the gateway refuses it, Unavailable when no stream is welcomed
        within ``timeout``; either way the previous declaration is restored."""
        previous = self.bundles
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._negotiation = (list(bundles), fut)
        self.bundles = list(bundles)
        if self._conn is not None:
            self._conn.finish(f"declaring bundles {bundles}")
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            self.bundles = previous
            raise Unavailable(
                f"no session welcomed with bundles {bundles} in {timeout:g} s"
            ) from None
        except FailedPrecondition:
            self.bundles = previous
            raise
        finally:
            self._negotiation = None

    def _negotiated(self, declared: list[tuple[str, str]], error: Exception | None) -> bool:
        """A Hello declaring ``declared`` was welcomed (``error`` None) or refused; True when
        that settled a :meth:`renegotiate` in progress."""
        if self._negotiation is None or self._negotiation[1].done():
            return False
        wanted, fut = self._negotiation
        if declared != wanted:
            return False
        if error is None:
            fut.set_result(None)
        elif isinstance(error, FailedPrecondition):
            fut.set_exception(error)
        else:
            return False
        return True

    # -- internals ---------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _channel(self, target: str) -> grpc.aio.Channel:
        options: list[tuple[str, Any]] = [("grpc.enable_retries", 0)]
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        if self.settings.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.settings.tls.server_name))
        creds = self._credentials
        if not isinstance(creds, grpc.ChannelCredentials):
            creds = creds()
        return grpc.aio.secure_channel(target, creds, options=options)

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
                if (
                    not welcomed
                    and not self._negotiated(self._declared, exc)
                    and isinstance(exc, FailedPrecondition)
                    and self._on_refused is not None
                ):
                    self._on_refused(exc)  # e.g. a gateway restarted without our head's tail
            finally:
                self._conn = None
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
        self._declared = list(self.bundles)
        call = session_pb2_grpc.SessionServiceStub(channel).Connect()
        await call.write(
            conv.hello(
                st.device_id,
                st.device_class,
                self._agent_version,
                st.session.max_inflight,
                st.session.max_chunk_bytes,
                self._session_id,
                # head versions: the gateway serves their tails, or refuses the session
                self._declared,
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
            s = Connection(
                call,
                w,
                self.settings,
                inflight=self._inflight,
                metrics=self.metrics,
                net=self.net,
                on_policy=self._on_policy,
            )
            self._session_id = w.session_id
            if w.policy is not None and self._on_policy is not None:
                self._on_policy(w.policy)
            # Everything unanswered goes out again, oldest first, under its idempotency key.
            for pending in sorted(self._inflight.values(), key=lambda p: p.seq):
                if not pending.future.done():
                    s.enqueue(pending.req.request_id)
            self._conn = s
            self.metrics.sessions += 1
            self._connected.set()
            log.info("session %s open to %s (device %s)", w.session_id, target, w.device_id)
            self._negotiated(self._declared, None)
            if self._negotiation is not None and self._negotiation[0] != self._declared:
                s.finish("a new bundle declaration is waiting")  # Hello raced the change
            await s.run(w.ping_interval_s or self.settings.session.ping_interval_s)
            return s.draining, True
        finally:
            self._conn = None
            await channel.close(grace=None)


__all__ = ["Credentials", "SessionClient", "backoff_delay", "channel_credentials"]
