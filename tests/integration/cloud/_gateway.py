"""Helpers: an in-process gateway on 127.0.0.1:0 serving the tiny CNN bundle, and a session
stream client built on our stubs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aiml021.common.v1 import tensor_pb2
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.settings import nest
from tests.support.tiny_cnn import build_bundle


def models_dir(tmp: Path) -> Path:
    root = tmp / "models"
    if not (root / "tiny_cnn" / "manifest.json").exists():
        build_bundle(root / "tiny_cnn")
    return root


@asynccontextmanager
async def running_gateway(tmp: Path, **overrides: Any) -> AsyncIterator[Gateway]:
    """A plaintext gateway on a free port; ``overrides`` are dotted keys (``"session.max_inflight"``)."""
    base = {"models_dir": models_dir(tmp), "server.port": 0, "tls.insecure": True}
    settings = GatewaySettings(**nest({**base, "metrics.port": None, **overrides}))
    gw = Gateway(settings)
    await gw.start()
    try:
        yield gw
    finally:
        await gw.stop()


def header(
    rid: str,
    shape: tuple[int, ...],
    total: int | None = None,
    model: str = "tiny_cnn",
    cut: str = "",
    dtype: int = tensor_pb2.DATA_TYPE_FLOAT32,
    version: str = "",
    **kw: Any,
) -> session_pb2.ConnectRequest:
    n = int(np.prod(shape)) * 4
    h = session_pb2.InferHeader(
        request_id=rid,
        model_name=model,
        model_version=version,
        cut_point=cut,
        total_bytes=n if total is None else total,
        **kw,
    )
    h.encoding.dtype = dtype
    h.encoding.shape.extend(shape)
    h.encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
    return session_pb2.ConnectRequest(infer_header=h)


def chunk(rid: str, offset: int, data: bytes, last: bool) -> session_pb2.ConnectRequest:
    return session_pb2.ConnectRequest(
        tensor_chunk=session_pb2.TensorChunk(request_id=rid, offset=offset, data=data, last=last)
    )


def hello(device: str = "") -> session_pb2.ConnectRequest:
    return session_pb2.ConnectRequest(hello=session_pb2.Hello(device_id=device, protocol_version=1))


class SessionClient:
    """A minimal session client: write frames, read answers by kind."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.call = session_pb2_grpc.SessionServiceStub(channel).Connect()

    async def send(self, *frames: session_pb2.ConnectRequest) -> None:
        for f in frames:
            await self.call.write(f)

    async def recv(self, kinds: tuple[str, ...] = ("infer_result", "infer_error")) -> Any:
        """Next frame of one of ``kinds`` (others, e.g. Credit, are skipped)."""
        while True:
            msg = await asyncio.wait_for(self.call.read(), 10)
            if msg is grpc.aio.EOF:
                return None
            if msg.WhichOneof("frame") in kinds:
                return msg

    async def infer(self, rid: str, x: np.ndarray, **kw: Any) -> Any:
        data = np.ascontiguousarray(x, np.float32).tobytes()
        await self.send(header(rid, x.shape, **kw), chunk(rid, 0, data, True))
        return await self.recv()


def logits(msg: Any) -> np.ndarray:
    t = msg.infer_result.outputs[0]
    return np.frombuffer(t.contents, np.float32).reshape(list(t.shape))
