"""Session frames as a device (hostile or not) writes them, built on our generated stubs."""

from __future__ import annotations

import numpy as np
from aiml021.common.v1 import tensor_pb2
from aiml021.session.v1 import session_pb2

MODEL = "fmnist_branchy"
"""The reference bundle every adversarial gateway serves (its full model takes 1x1x28x28)."""
IMAGE_SHAPE = (1, 1, 28, 28)


def hello(device: str = "") -> session_pb2.ConnectRequest:
    """The first frame of a session."""
    return session_pb2.ConnectRequest(hello=session_pb2.Hello(device_id=device, protocol_version=1))


def header(
    rid: str,
    shape: tuple[int, ...] = IMAGE_SHAPE,
    *,
    total: int | None = None,
    payload: bytes = b"",
    model: str = MODEL,
    cut: str = "",
) -> session_pb2.ConnectRequest:
    """InferHeader for a raw float32 tensor of ``shape`` (``payload`` inline when given)."""
    n = int(np.prod(shape)) * 4
    h = session_pb2.InferHeader(
        request_id=rid,
        model_name=model,
        cut_point=cut,
        total_bytes=n if total is None else total,
        payload=payload,
    )
    h.encoding.dtype = tensor_pb2.DATA_TYPE_FLOAT32
    h.encoding.shape.extend(shape)
    h.encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
    return session_pb2.ConnectRequest(infer_header=h)


def chunk(rid: str, offset: int, data: bytes, last: bool) -> session_pb2.ConnectRequest:
    """One TensorChunk."""
    return session_pb2.ConnectRequest(
        tensor_chunk=session_pb2.TensorChunk(request_id=rid, offset=offset, data=data, last=last)
    )


def ping(nonce: int = 0) -> session_pb2.ConnectRequest:
    """A Ping (the gateway answers every one with a Pong)."""
    return session_pb2.ConnectRequest(ping=session_pb2.Ping(nonce=nonce))


def image(seed: int = 0) -> np.ndarray:
    """A fixed, normalised input for the reference model."""
    return np.random.default_rng(seed).standard_normal(IMAGE_SHAPE).astype(np.float32)


__all__ = ["IMAGE_SHAPE", "MODEL", "chunk", "header", "hello", "image", "ping"]
