"""A session stream's outbound queue, bounded by what the device reads, and the stream's guards.

Answers to accepted requests are never dropped, so :meth:`Outbox.put` never blocks or refuses;
the bound is enforced upstream: once more than ``max_bytes`` wait to be written (the device does
not read, so gRPC's flow control holds the writer), the session stops reading the device's
frames (:meth:`Outbox.wait_room`). Requests and pings then stop producing answers, and the device's
own writes stall on flow control; a queue that stays full for ``outbound_stall_s`` ends the
stream with RESOURCE_EXHAUSTED.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiml021.session.v1 import session_pb2

from cloud.core import InferenceResult, ModelSpec
from cloud.grpc._converters import result_to_pb
from cloud.grpc._errors import rpc_status
from common.errors import AimlError, ResourceExhausted

FRAME_OVERHEAD = 512
"""Bytes a queued frame costs beyond its wire size (the Python message and queue entry), so
that floods of tiny frames (Pong) are bounded too."""


@dataclass(frozen=True, slots=True)
class StreamGuards:
    """Timeouts and the outbound bound of every session stream (settings ``session.*``)."""

    hello_timeout_s: float = 10.0
    idle_timeout_s: float = 120.0
    max_outbound_bytes: int = 8 * 1024 * 1024
    outbound_stall_s: float = 2.0
    max_result_bytes: int = 4 * 1024 * 1024


class Outbox:
    """FIFO of frames to write, with the byte count of what waits."""

    __slots__ = ("_items", "_ready", "_room", "max_bytes", "queued_bytes")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.queued_bytes = 0
        self._items: deque[tuple[Any, int]] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    @property
    def full(self) -> bool:
        """More than ``max_bytes`` wait to be written."""
        return self.queued_bytes > self.max_bytes

    def put(self, item: Any, nbytes: int = 0) -> None:
        """Queue ``item`` (``nbytes`` of it count against the bound)."""
        self._items.append((item, nbytes))
        self.queued_bytes += nbytes
        self._ready.set()
        if self.full:
            self._room.clear()

    def put_frame(self, msg: Any) -> None:
        """Queue a protobuf message, counted at its serialized size plus :data:`FRAME_OVERHEAD`."""
        self.put(msg, msg.ByteSize() + FRAME_OVERHEAD)

    async def get(self) -> Any:
        """The oldest item (waits for one)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        item, nbytes = self._items.popleft()
        self.queued_bytes -= nbytes
        if self.queued_bytes <= self.max_bytes // 2:
            self._room.set()
        return item

    async def wait_room(self, timeout_s: float) -> bool:
        """Wait until at most half of ``max_bytes`` wait; False if that took over ``timeout_s``."""
        try:
            await asyncio.wait_for(self._room.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    def clear(self) -> None:
        """Drop everything queued (the stream is ending)."""
        self._items.clear()
        self.queued_bytes = 0
        self._room.set()


class OutboxSink:
    """SessionSink writing ConnectResponse frames into a stream's outbox.

    An answer frame larger than ``max_result_bytes`` is not sent: a gRPC client ends the whole
    stream on a message over its receive limit (4 MiB by default), which would fail every other
    request of the session; that one request gets RESOURCE_EXHAUSTED instead."""

    __slots__ = ("max_result_bytes", "outbox")

    def __init__(self, outbox: Outbox, max_result_bytes: int = 4 * 1024 * 1024) -> None:
        self.outbox = outbox
        self.max_result_bytes = max_result_bytes

    def result(self, request_id: str, result: InferenceResult, spec: ModelSpec) -> None:
        msg = result_to_pb(request_id, result, spec)
        size = msg.ByteSize()
        if size > self.max_result_bytes:
            raise ResourceExhausted(
                f"answer of {size} bytes exceeds session.max_result_bytes "
                f"({self.max_result_bytes}); request fewer or smaller outputs (e.g. a best-path "
                f"head on a recognizer)"
            )
        self.outbox.put(msg, size + FRAME_OVERHEAD)

    def error(self, request_id: str, error: AimlError) -> None:
        msg = session_pb2.ConnectResponse()
        msg.infer_error.request_id = request_id
        msg.infer_error.status.CopyFrom(rpc_status(error))
        self.outbox.put_frame(msg)

    def credit(self, nbytes: int, requests: int) -> None:
        msg = session_pb2.ConnectResponse()
        msg.credit.bytes = nbytes
        msg.credit.requests = requests
        self.outbox.put_frame(msg)


__all__ = ["FRAME_OVERHEAD", "Outbox", "OutboxSink", "StreamGuards"]
