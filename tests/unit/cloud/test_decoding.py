"""PayloadDecoder: raw payloads are taken at once, codec frames are decoded on its threads (never
on the event loop), a bounded number wait, and a frame is held to what its header declared."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest
from aiml021.common.v1 import tensor_pb2

from cloud._metrics import GatewayMetrics
from cloud.core import (
    InferenceRequest,
    InferenceResult,
    ModelSpec,
    PayloadDecoder,
    PayloadFormat,
    RequestHeader,
)
from cloud.core._session_types import Pending
from common import codecs
from common.errors import CodecError, InvalidArgument, ResourceExhausted
from tests.unit.cloud._session_plane import SPEC

ZSTD = tensor_pb2.CODEC_KIND_ZSTD


class _Plane:
    def __init__(self) -> None:
        self.metrics = GatewayMetrics()
        self.threads: list[str] = []

    def submit(
        self, request: InferenceRequest, spec: ModelSpec | None = None, rows: int | None = None
    ) -> asyncio.Future[InferenceResult]:
        self.threads.append(threading.current_thread().name)
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(InferenceResult("m", "1", {"y": request.inputs["x"] * 2}))
        return fut


def _pending(shape: tuple[int, ...] = (1, 4), stages: tuple[int, ...] = ()) -> Pending:
    fmt = PayloadFormat("float32", shape, stages)
    return Pending(RequestHeader("r", "m", "", "", fmt, 16), SPEC, 0.0)


def _request() -> InferenceRequest:
    return InferenceRequest("m", "", {})


async def test_a_raw_payload_is_submitted_at_once_on_the_loop() -> None:
    dp, decoder = _Plane(), PayloadDecoder()
    fut = decoder.submit(dp, _request(), np.ones((1, 4), np.float32).tobytes(), _pending(), None)  # type: ignore[arg-type]
    assert fut.done() and dp.threads == [threading.current_thread().name]
    np.testing.assert_array_equal((await fut).outputs["y"], [[2.0] * 4])
    decoder.close()


async def test_a_codec_frame_is_decoded_on_a_decode_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import cloud.core._decoding as decoding

    seen: list[str] = []
    real = decoding.decode_payload

    def spy(*args: Any) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(decoding, "decode_payload", spy)
    dp, decoder = _Plane(), PayloadDecoder(threads=1)
    frame = codecs.encode(np.full((1, 4), 3, np.float32), "raw|zstd")
    p = _pending(stages=(ZSTD,))
    result = await asyncio.wait_for(decoder.submit(dp, _request(), frame, p, None), 5)  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.outputs["y"], [[6.0] * 4])
    assert seen and seen[0].startswith("decode") and p.decode_s > 0
    assert decoder.waiting == 0
    decoder.close()


async def test_a_frame_declaring_more_than_its_header_is_refused_before_decoding() -> None:
    dp, decoder = _Plane(), PayloadDecoder()
    bomb = codecs.encode(np.zeros((1, 4, 4096), np.float32), "raw|zstd")
    fut = decoder.submit(dp, _request(), bomb, _pending(stages=(ZSTD,)), None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="header declared"):
        await asyncio.wait_for(fut, 5)
    with pytest.raises(CodecError):
        await asyncio.wait_for(
            decoder.submit(dp, _request(), b"\x00garbage", _pending(stages=(ZSTD,)), None),  # type: ignore[arg-type]
            5,
        )
    assert dp.threads == []  # nothing reached the data plane
    decoder.close()


async def test_only_max_waiting_frames_wait_for_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    import cloud.core._decoding as decoding

    gate = threading.Event()
    real = decoding.decode_payload

    def slow(*args: Any) -> np.ndarray:
        gate.wait(5)
        return real(*args)

    monkeypatch.setattr(decoding, "decode_payload", slow)
    dp, decoder = _Plane(), PayloadDecoder(threads=1, max_waiting=2)
    frame = codecs.encode(np.ones((1, 4), np.float32), "raw|zstd")
    held = [decoder.submit(dp, _request(), frame, _pending(stages=(ZSTD,)), None) for _ in range(2)]  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    with pytest.raises(ResourceExhausted, match="waiting to be decoded"):
        decoder.submit(dp, _request(), frame, _pending(stages=(ZSTD,)), None)  # type: ignore[arg-type]
    gate.set()
    assert len(await asyncio.wait_for(asyncio.gather(*held), 5)) == 2
    decoder.close()
