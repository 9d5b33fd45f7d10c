"""Device processes of a soak run: ``python -m benchmarks.soak.device CONFIG_JSON``.

An honest device sends one request at a time at its rate, each with its own idempotency key, and
retries it (new request id, same key) over reconnects until it is answered or the run ends; one
JSON line per request goes to ``out``: key, first send, answer time, attempts, status, and
whether the answer was computed or replayed (``cached``). A hostile device cycles through the
attacks of issue 13 (stalled buffers, too many sessions, never reading, garbage, no Hello).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aiml021.common.v1 import tensor_pb2
from aiml021.session.v1 import session_pb2, session_pb2_grpc
from google.rpc import code_pb2

MODEL = "fmnist_branchy"
RETRYABLE = {code_pb2.UNAVAILABLE, code_pb2.RESOURCE_EXHAUSTED, code_pb2.DEADLINE_EXCEEDED,
             code_pb2.ABORTED, code_pb2.INTERNAL, code_pb2.FAILED_PRECONDITION}  # fmt: skip
"""Answers a device retries (FAILED_PRECONDITION: a key whose claim outlived a crashed gateway)."""


def _creds(pki: Path, device: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / f"{device}.key").read_bytes(),
        (pki / f"{device}.pem").read_bytes(),
    )


def _header(rid: str, key: str, payload: bytes, total: int | None = None) -> Any:
    h = session_pb2.InferHeader(request_id=rid, model_name=MODEL, idempotency_key=key,
                                payload=payload, total_bytes=total or len(payload),
                                payload_digest=hashlib.sha256(payload).digest())  # fmt: skip
    h.encoding.dtype = tensor_pb2.DATA_TYPE_FLOAT32
    h.encoding.shape.extend((1, 1, 28, 28))
    h.encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
    return session_pb2.ConnectRequest(infer_header=h)


def _hello(device: str) -> Any:
    return session_pb2.ConnectRequest(hello=session_pb2.Hello(device_id=device, protocol_version=1))


def _retrieve(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


class _Session:
    """One session stream; answers are dispatched to waiting requests by request id."""

    def __init__(self, channel: grpc.aio.Channel, device: str) -> None:
        self.call = session_pb2_grpc.SessionServiceStub(channel).Connect()
        self.device = device
        self.waiting: dict[str, asyncio.Future[Any]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def open(self) -> None:
        await self.call.write(_hello(self.device))
        first = await asyncio.wait_for(self.call.read(), 5)
        if first is grpc.aio.EOF or first.WhichOneof("frame") != "welcome":
            raise ConnectionError("no Welcome")
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            while (msg := await self.call.read()) is not grpc.aio.EOF:
                kind = msg.WhichOneof("frame")
                if kind in ("infer_result", "infer_error"):
                    fut = self.waiting.pop(getattr(msg, kind).request_id, None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg)
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            pass
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(ConnectionError("stream ended"))

    async def ask(self, rid: str, key: str, payload: bytes, timeout_s: float) -> Any:
        fut = asyncio.get_running_loop().create_future()
        fut.add_done_callback(_retrieve)
        self.waiting[rid] = fut
        try:
            await self.call.write(_header(rid, key, payload))
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self.waiting.pop(rid, None)

    def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        self.call.cancel()


class _Lines:
    """Records written as they end (line-buffered): a run that is cut short keeps them."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("w", buffering=1)

    def append(self, rec: dict[str, Any]) -> None:
        self._f.write(json.dumps(rec) + "\n")

    def close(self) -> None:
        self._f.close()


async def honest(device: str, cfg: dict[str, Any], out: _Lines) -> None:
    address, pki = cfg["address"], Path(cfg["pki"])
    end = cfg["end"]
    period = 1.0 / cfg["rate_per_device"]
    payload = np.random.default_rng(0).standard_normal((1, 1, 28, 28), np.float32).tobytes()
    channel = grpc.aio.secure_channel(address, _creds(pki, device))
    session: _Session | None = None
    seq = 0
    next_at = time.time() + random.random() * period
    try:
        while time.time() < end:
            await asyncio.sleep(max(0.0, next_at - time.time()))
            next_at += period
            key = f"{device}-{seq}"
            seq += 1
            rec: dict[str, Any] = {"key": key, "device": device, "sent": time.time(),
                                   "attempts": 0, "status": "LOST", "cached": None}  # fmt: skip
            while time.time() < end + cfg["grace_s"]:
                rec["attempts"] += 1
                try:
                    if session is None:
                        session = _Session(channel, device)
                        await session.open()
                    msg = await session.ask(
                        f"{key}#{rec['attempts']}", key, payload, cfg["timeout_s"]
                    )
                except (
                    grpc.aio.AioRpcError,
                    ConnectionError,
                    TimeoutError,
                    asyncio.InvalidStateError,
                ):
                    if session is not None:
                        session.close()
                    session = None
                    await asyncio.sleep(0.2 + random.random() * 0.5)
                    continue
                if msg.WhichOneof("frame") == "infer_result":
                    rec.update(status="OK", cached=msg.infer_result.cached, answered=time.time())
                    break
                code = msg.infer_error.status.code
                if code not in RETRYABLE:
                    rec.update(status=f"ERROR:{code}", answered=time.time())
                    break
                await asyncio.sleep(0.1 + random.random() * 0.3)
            out.append(rec)
    finally:
        if session is not None:
            session.close()
        await channel.close()


async def _attack(kind: str, channel: grpc.aio.Channel, device: str) -> None:
    stub = session_pb2_grpc.SessionServiceStub(channel)
    calls: list[Any] = []
    try:
        if kind == "stall":  # declare 2 x 4 MiB, send nothing
            call = stub.Connect()
            calls.append(call)
            await call.write(_hello(device))
            for i in range(2):
                await call.write(_header(f"s{i}", "", b"", total=4 << 20))
            await asyncio.sleep(5)
        elif kind == "sessions":  # more sessions than the device may have
            for _ in range(20):
                call = stub.Connect()
                calls.append(call)
                await call.write(_hello(device))
            await asyncio.sleep(3)
        elif kind == "noread":  # big answers, never read
            call = stub.Connect()
            calls.append(call)
            await call.write(_hello(device))
            for i in range(50):
                c = session_pb2.TensorChunk(request_id="x" * 65536 + str(i), data=b"x", last=True)
                await asyncio.wait_for(call.write(session_pb2.ConnectRequest(tensor_chunk=c)), 3)
            await asyncio.sleep(3)
        elif kind == "garbage":
            raw = channel.stream_stream("/aiml021.session.v1.SessionService/Connect")()
            calls.append(raw)
            await raw.write(b"\xff" * 64)
            await asyncio.sleep(1)
        elif kind == "nohello":
            calls.append(stub.Connect())
            await asyncio.sleep(12)
    except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
        pass
    finally:
        for c in calls:
            c.cancel()


async def hostile(device: str, cfg: dict[str, Any], out: _Lines) -> None:
    kinds = ["stall", "sessions", "noread", "garbage", "nohello"]
    i = random.randrange(len(kinds))
    while time.time() < cfg["end"]:
        kind = kinds[i % len(kinds)]
        i += 1
        async with grpc.aio.secure_channel(cfg["address"], _creds(Path(cfg["pki"]), device)) as ch:
            with contextlib.suppress(Exception):
                await _attack(kind, ch, device)
        out.append({"device": device, "attack": kind, "at": time.time()})
        await asyncio.sleep(1)


async def main(cfg: dict[str, Any]) -> None:
    out = _Lines(Path(cfg["out"]))
    try:
        await asyncio.gather(
            *(honest(d, cfg, out) for d in cfg["honest"]),
            *(hostile(d, cfg, out) for d in cfg["hostile"]),
        )
    finally:
        out.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
