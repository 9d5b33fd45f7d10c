"""Inputs are validated once per request: arrays by validate_inputs, a session request from its
header by check_payload_format (the data plane does not check its decoded tensor again), and a
codec frame is held to its header before its payload is decoded."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pytest

from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    Backend,
    ByteBudget,
    Chunk,
    DataPlane,
    InferenceRequest,
    ModelKey,
    ModelRepository,
    ModelSpec,
    PayloadFormat,
    RequestHeader,
    SessionCore,
    SessionLimits,
    TensorSpec,
    _dataplane,
    check_payload_format,
    decode_payload,
    validate_inputs,
)
from common import codecs
from common.errors import AimlError, CodecError, InvalidArgument

SPEC = ModelSpec(
    "m",
    "1",
    Path("m.onnx"),
    (TensorSpec("x", "float32", (-1, 3, 4)),),
    (TensorSpec("y", "float32", (-1, 3, 4)),),
    8,
)


@pytest.mark.parametrize(
    ("dtype", "shape", "words"),
    [
        ("float64", (1, 3, 4), "dtype float64, expected float32"),
        ("float32", (1, 3, 5), "shape"),
        ("float32", (1, 3), "shape"),
        ("float32", (9, 3, 4), "exceeds max batch size 8"),
        ("float32", (0, 3, 4), "empty batch"),
    ],
)
def test_arrays_and_session_headers_are_held_to_the_same_rules(
    dtype: str, shape: tuple[int, ...], words: str
) -> None:
    with pytest.raises(InvalidArgument, match=words):
        validate_inputs(SPEC, {"x": np.zeros(shape, dtype)})
    with pytest.raises(InvalidArgument, match=words):
        check_payload_format(SPEC, PayloadFormat(dtype, shape, (1,)))


def test_valid_inputs_give_the_batch_size() -> None:
    assert validate_inputs(SPEC, {"x": np.zeros((5, 3, 4), np.float32)}) == 5
    assert check_payload_format(SPEC, PayloadFormat("float32", (5, 3, 4), (1,))) == 5
    # A session header may leave out the batch dimension of one sample.
    assert check_payload_format(SPEC, PayloadFormat("float32", (3, 4), (1,))) == 1


def test_session_header_names_what_declared_the_bad_value() -> None:
    with pytest.raises(InvalidArgument, match=r"'x' \(InferHeader.encoding\) has dtype int8"):
        check_payload_format(SPEC, PayloadFormat("int8", (1, 3, 4), (1,)))
    two = ModelSpec("two", "1", Path("t.onnx"), SPEC.inputs * 2, SPEC.outputs, 8)
    with pytest.raises(InvalidArgument, match="sessions send one"):
        check_payload_format(two, PayloadFormat("float32", (1, 3, 4), (1,)))


class _Double(Backend):
    async def load(self, model: ModelSpec) -> None: ...

    async def unload(self, key: ModelKey) -> None: ...

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        return {"y": inputs["x"] + 1}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None: ...


class _Sink:
    def __init__(self) -> None:
        self.results: list[str] = []
        self.errors: list[AimlError] = []

    def result(self, request_id: str, result: object, spec: object) -> None:
        self.results.append(request_id)

    def error(self, request_id: str, error: AimlError) -> None:
        self.errors.append(error)

    def credit(self, nbytes: int, requests: int) -> None: ...


async def test_a_session_request_is_validated_once_and_a_kserve_request_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []

    def counting(spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> int:
        calls.append(spec.name)
        return validate_inputs(spec, inputs)

    monkeypatch.setattr(_dataplane, "validate_inputs", counting)
    dp = DataPlane(
        ModelRepository([SPEC]), _Double(), DynamicBatching(BatcherConfig(max_batch_size=8))
    )
    await dp.start()
    sink = _Sink()
    core = SessionCore(
        dp, SessionLimits(1 << 16, 1 << 14, 8, 1 << 16, 5.0, 20.0), ByteBudget(1 << 20), sink, "dev"
    )
    x = np.ones((3, 4), np.float32)
    frame = bytes(codecs.encode(x, "q4|zstd"))
    for rid, payload in (("raw", x.tobytes()), ("frame", frame)):
        # The header names only bare elements' codec (RAW); a frame describes its own.
        fmt = PayloadFormat("float32", (3, 4), (1,) if rid == "raw" else ())
        core.on_header(RequestHeader(rid, "m", "", "", fmt, len(payload)))
        core.on_chunk(Chunk(rid, 0, payload, True))
    await asyncio.sleep(0.05)
    assert sink.results == ["raw", "frame"] and not sink.errors
    assert calls == []  # checked from the header only
    m = dp.metrics
    name = str(codecs.peek_header(frame).spec)
    assert name.startswith("q4") and m.child(m.bytes_received, name)._value.get() == len(frame)
    assert m.child(m.bytes_received, "raw")._value.get() == x.nbytes
    await dp.infer(InferenceRequest("m", "", {"x": np.ones((2, 3, 4), np.float32)}))
    assert calls == ["m"]
    core.close()
    await dp.close()


def test_a_frame_that_disagrees_with_its_header_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from common.codecs import _pipeline

    decoded: list[int] = []
    real = _pipeline._decode_payload

    def spy(*args: object) -> np.ndarray:
        decoded.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_pipeline, "_decode_payload", spy)
    x = np.random.default_rng(0).random((1, 3, 4), dtype=np.float32)
    frame = codecs.encode(x, "int8")
    with pytest.raises(InvalidArgument, match="header declared float32\\[1, 3, 5\\]"):
        decode_payload(frame, PayloadFormat("float32", (1, 3, 5), (3,), "int8"), 1 << 20)
    assert decoded == []
    out = decode_payload(frame, PayloadFormat("float32", (1, 3, 4), (3,), "int8"), 1 << 20)
    assert out.shape == (1, 3, 4) and decoded == [1]


def test_decode_shows_the_parsed_header_to_its_check_first() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    seen: list[codecs.FrameHeader] = []
    np.testing.assert_array_equal(codecs.decode(codecs.encode(x, "raw"), check=seen.append), x)
    assert seen[0].shape == (3, 4) and str(seen[0].spec) == "raw"

    def refuse(header: codecs.FrameHeader) -> None:
        raise CodecError("not this one")

    with pytest.raises(CodecError, match="not this one"):
        codecs.decode(codecs.encode(x, "raw"), check=refuse)
