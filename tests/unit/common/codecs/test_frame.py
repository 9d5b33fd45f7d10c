"""Header validation, limits, truncation, checksums, and fuzzed frames that must never crash."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.codecs import DecodeLimits, EntropyModel, decode, encode, fit_entropy_model, peek_header
from common.codecs._frame import checksum
from common.errors import CodecError, InvalidArgument

SPECS = [
    "raw",
    "f16",
    "int8:per_channel",
    "q4|sparse:bitmap|ans",
    "q3|sparse:rle|range",
    "q2|zstd",
    "f16|sparse:rle|zstd",
    "clip:0,4|q3|ans",
]


def _reseal(frame: bytearray) -> bytes:
    """Recompute the CRC so that corruption reaches the parsers behind the checksum."""
    struct.pack_into("<I", frame, 8, checksum(frame))
    return bytes(frame)


def _with_shape(frame: bytes, dims: list[int]) -> bytes:
    out = bytearray(frame)
    struct.pack_into(f"<{len(dims)}I", out, 24, *dims)
    elements = int(np.prod(dims, dtype=object))
    struct.pack_into("<Q", out, 12, elements * 4)
    return _reseal(out)


@pytest.fixture
def frame(activation: np.ndarray) -> bytes:
    return encode(activation, "q4|sparse:bitmap|ans")


def test_header_describes_the_frame(frame: bytes, activation: np.ndarray) -> None:
    header = peek_header(frame)
    assert header.shape == activation.shape and header.dtype == np.float32
    assert str(header.spec) == "q4|sparse:bitmap|ans"
    assert header.original_bytes == activation.nbytes
    assert header.frame_bytes == len(frame)
    assert header.sparse is not None and header.sparse.nnz == np.count_nonzero(decode(frame))
    assert header.quant is not None and header.quant.bits == 4
    assert header.entropy_model_id is None  # embedded histogram
    assert peek_header(frame[: header.header_bytes]).shape == activation.shape


def test_declared_shape_over_the_limit_is_refused_before_allocating(frame: bytes) -> None:
    huge = _with_shape(frame, [1 << 20, 1 << 20, 1, 1])
    tracemalloc.start()
    try:
        with pytest.raises(CodecError, match=r"elements .* the limit is 1000"):
            decode(huge, limits=DecodeLimits(max_elements=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_declared_bytes_over_the_limit_are_refused(frame: bytes) -> None:
    with pytest.raises(CodecError, match="decoded bytes; the limit is 100"):
        decode(frame, limits=DecodeLimits(max_bytes=100))


def test_truncated_and_padded_frames(frame: bytes) -> None:
    with pytest.raises(CodecError, match="truncated"):
        decode(frame[:-1])
    with pytest.raises(CodecError, match="truncated"):
        decode(frame[:10])
    with pytest.raises(CodecError, match="truncated"):
        peek_header(frame[:30])
    with pytest.raises(CodecError, match="after its declared end"):
        decode(frame + b"\0")


def test_checksum_mismatch(frame: bytes) -> None:
    bad = bytearray(frame)
    bad[-3] ^= 0x40
    with pytest.raises(CodecError, match="checksum mismatch"):
        decode(bytes(bad))


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, 0x00, "not a codec frame"),
        (2, 9, "format version 9"),
        (3, 99, "unknown dtype code 99"),
        (4, 200, "dimensions"),
        (5, 0, "stages"),
    ],
)
def test_prelude_fields_are_checked(frame: bytes, offset: int, value: int, message: str) -> None:
    bad = bytearray(frame)
    bad[offset] = value
    with pytest.raises(CodecError, match=message):
        decode(_reseal(bad))


def test_unknown_codec_id_and_version(frame: bytes) -> None:
    first_record = 24 + 4 * 4
    bad = bytearray(frame)
    bad[first_record] = 42
    with pytest.raises(CodecError, match="unknown codec id 42"):
        decode(_reseal(bad))
    bad = bytearray(frame)
    bad[first_record + 1] = 7
    with pytest.raises(CodecError, match="'q' version 7"):
        decode(_reseal(bad))


def test_entropy_model_must_be_available(activation: np.ndarray) -> None:
    model = fit_entropy_model("q4|ans", [activation], cut="cut1")
    frame = encode(activation, "q4|ans", entropy_model=model)
    assert peek_header(frame).entropy_model_id == model.model_id_hex
    with pytest.raises(CodecError, match=f"entropy model {model.model_id_hex}"):
        decode(frame)
    other = EntropyModel(np.full(16, 1 / 16))
    with pytest.raises(CodecError, match="decoder has"):
        decode(frame, entropy_models={"x": other})
    assert np.array_equal(
        decode(frame, entropy_models=[other, model]), decode(encode(activation, "q4"))
    )
    with pytest.raises(CodecError, match="needs 8"):
        encode(activation, "q3|ans", entropy_model=model)


def test_codec_error_is_an_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        decode(b"not a frame at all, definitely not")


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_LIMITS = DecodeLimits(max_elements=100_000, max_bytes=1 << 20)


def _frames() -> tuple[list[bytes], list[EntropyModel]]:
    rng = np.random.default_rng(3)
    x = np.maximum(rng.standard_normal((2, 8, 6, 6)).astype(np.float32), 0)
    spatial = fit_entropy_model("clip:0,2|q2|ans", [x], context="spatial")
    channel = fit_entropy_model("clip:0,2|q2|range", [x], context="channel")
    frames = [encode(x[:1], s) for s in SPECS]
    frames.append(encode(x, "clip:0,2|q2|ans", entropy_model=spatial))
    frames.append(encode(x[:1], "clip:0,2|q2|range", entropy_model=channel))
    return frames, [spatial, channel]


FRAMES, MODELS = _frames()


def _decode_or_codec_error(frame: bytes) -> None:
    try:
        y = decode(frame, limits=_LIMITS, entropy_models=MODELS)
    except CodecError:
        return
    header = peek_header(frame)
    assert y.shape == header.shape and y.dtype == header.dtype


@FUZZ
@given(st.sampled_from(FRAMES), st.data())
def test_fuzzed_frames_raise_codec_error_or_decode(frame: bytes, data: st.DataObject) -> None:
    out = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(out) - 1))
        out[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(out)))
    _decode_or_codec_error(bytes(out[:cut]))
    _decode_or_codec_error(bytes(out))


@FUZZ
@given(st.sampled_from(FRAMES), st.data())
def test_fuzzed_frames_behind_a_valid_checksum(frame: bytes, data: st.DataObject) -> None:
    out = bytearray(frame)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(12, len(out) - 1))
        out[at] = data.draw(st.integers(0, 255))
    tracemalloc.start()
    try:
        _decode_or_codec_error(_reseal(out))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * _LIMITS.max_bytes


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes_never_crash(blob: bytes) -> None:
    with pytest.raises(CodecError):
        decode(blob, limits=_LIMITS)
