"""Raw session streams as an attacker opens them: many at once, reading only what the attack
needs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from tests.adversarial._frames import hello
from tests.adversarial._served import ServedGateway


@dataclass
class Opened:
    """How a session stream's opening went."""

    call: grpc.aio.StreamStreamCall
    welcomed: bool
    code: grpc.StatusCode | None
    details: str
    seconds: float
    """From writing Hello to the Welcome or the status."""


async def open_session(
    channel: grpc.aio.Channel, *frames: session_pb2.ConnectRequest, device: str = ""
) -> Opened:
    """Open a stream, write Hello, wait for Welcome or the stream's end; once welcomed, write
    ``frames``. (Frames written after the gateway ended a stream make the client library report
    its own INTERNAL instead of the gateway's status, hence the wait.)"""
    call = session_pb2_grpc.SessionServiceStub(channel).Connect()
    t0 = time.monotonic()
    try:
        await call.write(hello(device))
        first = await asyncio.wait_for(call.read(), 10)
    except grpc.aio.AioRpcError as exc:
        return Opened(call, False, exc.code(), exc.details() or "", time.monotonic() - t0)
    seconds = time.monotonic() - t0
    if first is grpc.aio.EOF:
        return Opened(call, False, await call.code(), await call.details(), seconds)
    welcomed = first.WhichOneof("frame") == "welcome"
    if welcomed:
        for f in frames:
            await call.write(f)
    return Opened(call, welcomed, None, "", seconds)


async def next_answer(call: grpc.aio.StreamStreamCall, timeout_s: float = 10.0) -> object:
    """The next InferResult or InferError frame of ``call`` (Credit, Pong... skipped)."""
    while True:
        msg = await asyncio.wait_for(call.read(), timeout_s)
        if msg is grpc.aio.EOF:
            return msg
        if msg.WhichOneof("frame") in ("infer_result", "infer_error"):
            return msg


@asynccontextmanager
async def channels(gw: ServedGateway, device: str, n: int) -> AsyncIterator[list[grpc.aio.Channel]]:
    """``n`` connections of ``device`` to ``gw``, closed (every call with them) at the end."""
    chans = [gw.aio_channel(device) for _ in range(n)]
    try:
        yield chans
    finally:
        for ch in chans:
            await ch.close()


async def open_many(
    chans: list[grpc.aio.Channel], n: int, *frames: session_pb2.ConnectRequest
) -> list[Opened]:
    """Open ``n`` sessions at once, spread over ``chans``."""
    return list(
        await asyncio.gather(*(open_session(chans[i % len(chans)], *frames) for i in range(n)))
    )


__all__ = ["Opened", "channels", "next_answer", "open_many", "open_session"]
