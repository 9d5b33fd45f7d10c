"""KServe ModelInfer calls as an attacker makes them: timed, with the status they ended with."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
import numpy as np
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from tests.adversarial._frames import IMAGE_SHAPE, MODEL, image
from tests.adversarial._served import ServedGateway

BIG_MESSAGES = [
    ("grpc.max_send_message_length", 64 << 20),
    ("grpc.max_receive_message_length", 64 << 20),
]


@dataclass
class Answer:
    """How one call ended."""

    code: grpc.StatusCode
    details: str
    seconds: float


async def timed(call: Awaitable[object]) -> Answer:
    """Await ``call``; its status (OK when it returned) and how long it took."""
    t0 = time.monotonic()
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return Answer(exc.code(), exc.details() or "", time.monotonic() - t0)
    return Answer(grpc.StatusCode.OK, "", time.monotonic() - t0)


def infer_request(
    model: str = MODEL, shape: tuple[int, ...] = IMAGE_SHAPE, contents: bytes | None = None
) -> pb.ModelInferRequest:
    """A ModelInferRequest of the reference model's input (``contents``: raw bytes to send)."""
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name="input", datatype="FP32", shape=list(shape))
    req.raw_input_contents.append(image().tobytes() if contents is None else contents)
    return req


def stub(channel: grpc.aio.Channel) -> pb_grpc.GRPCInferenceServiceStub:
    return pb_grpc.GRPCInferenceServiceStub(channel)


async def reference_logits(channel: grpc.aio.Channel) -> np.ndarray:
    """The reference model's answer to :func:`tests.adversarial._frames.image`."""
    out = await stub(channel).ModelInfer(infer_request(), timeout=10)
    return np.frombuffer(out.raw_output_contents[0], np.float32)


def metrics_bytes(gw: ServedGateway) -> int:
    """Size of the gateway's /metrics page."""
    with urllib.request.urlopen(f"http://127.0.0.1:{gw.metrics_port}/metrics", timeout=10) as r:
        return len(r.read())


async def many(calls: Sequence[Callable[[], Awaitable[object]]], concurrency: int) -> list[Answer]:
    """Start each of ``calls`` (a grpc.aio call starts when made), at most ``concurrency`` in
    flight."""
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Callable[[], Awaitable[object]]) -> Answer:
        async with gate:
            return await timed(call())

    return list(await asyncio.gather(*(one(c) for c in calls)))


__all__ = [
    "BIG_MESSAGES",
    "Answer",
    "infer_request",
    "many",
    "metrics_bytes",
    "reference_logits",
    "stub",
    "timed",
]
