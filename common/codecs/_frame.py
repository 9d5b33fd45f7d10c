"""The self-describing frame every codec writes, and its validation.

Layout (little-endian)::

    0   2  magic b"\\xa2\\x1c"
    2   1  frame format version (1)
    3   1  dtype (aiml021.common.v1.DataType number)
    4   1  ndim (<= 8)
    5   1  number of stage records (<= 8)
    6   2  header length in bytes (this prelude, the shape and the stage records)
    8   4  CRC32C of the whole frame with these four bytes left out
    12  8  original size in bytes (prod(shape) * itemsize)
    20  4  coded size in bytes (the payload after the header)
    24     shape: ndim x uint32
           stage records: uint8 codec id, uint8 codec version, uint16 length, parameters
           payload (coded_bytes)

:func:`parse_header` checks every field, the limits and the sizes before anything is allocated
from a declared size.
"""

from __future__ import annotations

import dataclasses
import math
import struct

import google_crc32c
import numpy as np

from common import dtypes
from common.codecs import _registry
from common.codecs._entropy import EntropyParams
from common.codecs._quant import QuantParams
from common.codecs._sparse import SparseParams
from common.codecs._spec import CodecSpec, CodecStage, StageKind
from common.errors import CodecError, InvalidArgument

MAGIC = b"\xa2\x1c"
FORMAT_VERSION = 1
MAX_NDIM = 8
MAX_STAGES = 8
_PRELUDE = struct.Struct("<2sBBBBHIQI")
_RECORD = struct.Struct("<BBH")
_CRC_AT = 8


def dtype_code(dtype: np.dtype) -> int:
    """Wire code of a numpy dtype (its ``aiml021.common.v1.DataType`` number, from
    :mod:`common.dtypes`); CodecError when the frame format cannot carry it."""
    try:
        return dtypes.lookup(dtype).proto
    except InvalidArgument:
        raise CodecError(
            f"dtype {np.dtype(dtype)} cannot be coded ({', '.join(sorted(dtypes.NAMES))})"
        ) from None


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """Bounds a decoder enforces before allocating anything a frame declares."""

    max_elements: int = 1 << 24
    """Largest element count a frame may declare."""
    max_bytes: int = 1 << 26
    """Largest decoded size in bytes a frame may declare (and largest frame accepted)."""


@dataclasses.dataclass(frozen=True, eq=False)
class FrameHeader:
    """Everything a frame declares, parsed and validated (no payload needed)."""

    format_version: int
    dtype: np.dtype
    shape: tuple[int, ...]
    spec: CodecSpec  # the decoding pipeline (encode-only choices such as the clip method are not kept)
    original_bytes: int
    coded_bytes: int
    header_bytes: int
    crc32c: int
    quant: QuantParams | None = None
    sparse: SparseParams | None = None
    entropy: EntropyParams | None = None

    @property
    def elements(self) -> int:
        return math.prod(self.shape)

    @property
    def frame_bytes(self) -> int:
        return self.header_bytes + self.coded_bytes

    @property
    def entropy_model_id(self) -> str | None:
        """Hex id of the external entropy model the frame needs, if any."""
        return None if self.entropy is None else self.entropy.model_id_hex


def checksum(frame: bytes | bytearray | memoryview) -> int:
    """CRC32C of a frame, leaving out its own checksum field."""
    view = memoryview(frame)
    head = google_crc32c.value(bytes(view[:_CRC_AT]))
    return int(google_crc32c.extend(head, bytes(view[_CRC_AT + 4 :])))


def build_frame(
    dtype: np.dtype,
    shape: tuple[int, ...],
    records: list[tuple[StageKind, bytes]],
    payload: bytes,
) -> bytes:
    """Assemble header, records and payload and fill in the checksum."""
    if len(shape) > MAX_NDIM:
        raise CodecError(f"tensor has {len(shape)} dimensions; frames carry at most {MAX_NDIM}")
    if any(d >= 1 << 32 for d in shape):
        raise CodecError(f"dimension too large for a frame: {shape}")
    body = b"".join(
        _RECORD.pack(_registry.STAGES[kind][0], _registry.STAGES[kind][1], len(params)) + params
        for kind, params in records
    )
    header_len = _PRELUDE.size + 4 * len(shape) + len(body)
    if header_len > 0xFFFF or len(payload) >= 1 << 32:
        raise CodecError("frame header or payload too large")
    original = math.prod(shape) * np.dtype(dtype).itemsize
    prelude = _PRELUDE.pack(
        MAGIC, FORMAT_VERSION, dtype_code(dtype), len(shape), len(records), header_len, 0,
        original, len(payload),
    )  # fmt: skip
    frame = bytearray(prelude + struct.pack(f"<{len(shape)}I", *shape) + body + payload)
    struct.pack_into("<I", frame, _CRC_AT, checksum(frame))
    return bytes(frame)


def parse_header(frame: bytes | bytearray | memoryview, limits: DecodeLimits | None) -> FrameHeader:
    """Parse and validate the header; with ``limits``, also check sizes against them."""
    view = memoryview(frame)
    if len(view) < _PRELUDE.size:
        raise CodecError(
            f"frame truncated: {len(view)} bytes, the header alone needs {_PRELUDE.size}"
        )
    magic, version, code, ndim, nstages, header_len, crc, original, coded = _PRELUDE.unpack_from(
        view
    )
    if magic != MAGIC:
        raise CodecError(f"not a codec frame (magic {bytes(magic)!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise CodecError(
            f"unsupported frame format version {version} (this build reads {FORMAT_VERSION})"
        )
    try:
        dtype = dtypes.by_proto(code).numpy
    except InvalidArgument:
        raise CodecError(f"frame declares unknown dtype code {code}") from None
    if ndim > MAX_NDIM or nstages > MAX_STAGES or nstages == 0:
        raise CodecError(
            f"frame declares {ndim} dimensions and {nstages} stages (at most {MAX_NDIM}, 1..{MAX_STAGES})"
        )
    if header_len < _PRELUDE.size + 4 * ndim + _RECORD.size * nstages:
        raise CodecError(f"frame header length {header_len} too small for its fields")
    if len(view) < header_len:
        raise CodecError(f"frame truncated: {len(view)} bytes, header declares {header_len}")
    shape = struct.unpack_from(f"<{ndim}I", view, _PRELUDE.size)
    elements = math.prod(shape)
    if original != elements * dtype.itemsize:
        raise CodecError(f"frame declares {original} original bytes for {dtype} {shape}")
    if limits is not None:
        if elements > limits.max_elements:
            raise CodecError(
                f"frame declares {elements} elements {shape}; the limit is {limits.max_elements}"
            )
        if original > limits.max_bytes:
            raise CodecError(
                f"frame declares {original} decoded bytes; the limit is {limits.max_bytes}"
            )
    parsed = _parse_records(view, _PRELUDE.size + 4 * ndim, header_len, nstages, shape)
    header = FrameHeader(
        version, dtype, shape, CodecSpec(tuple(parsed.stages)), original, coded, header_len, crc,
        quant=parsed.quant, sparse=parsed.sparse, entropy=parsed.entropy,
    )  # fmt: skip
    _check_value_dtype(header)
    return header


@dataclasses.dataclass
class _Records:
    stages: list[CodecStage]
    quant: QuantParams | None = None
    sparse: SparseParams | None = None
    entropy: EntropyParams | None = None


def _parse_records(
    view: memoryview, at: int, end: int, count: int, shape: tuple[int, ...]
) -> _Records:
    raw: list[tuple[StageKind, bytes]] = []
    for _ in range(count):
        if at + _RECORD.size > end:
            raise CodecError("frame stage records run past the header")
        wire, version, length = _RECORD.unpack_from(view, at)
        at += _RECORD.size
        if at + length > end:
            raise CodecError("frame stage parameters run past the header")
        raw.append((_registry.kind_for_id(wire, version), bytes(view[at : at + length])))
        at += length
    if at != end:
        raise CodecError(f"frame header has {end - at} unexplained bytes")
    CodecSpec(tuple(CodecStage(kind) for kind, _ in raw))  # order and uniqueness first
    stages: list[CodecStage] = []
    out = _Records(stages)
    for kind, data in raw:
        if kind is StageKind.QUANTIZE:
            quant = out.quant = QuantParams.from_bytes(data, shape)
            stages.append(
                CodecStage(kind, bits=quant.bits, per_channel=quant.per_channel, gamma=quant.gamma)
            )
            continue
        if kind is StageKind.SPARSIFY:
            sparse = out.sparse = SparseParams.from_bytes(data, math.prod(shape))
            stages.append(CodecStage(kind, sparse_index=sparse.index))
            continue
        if kind in (StageKind.ANS, StageKind.RANGE):
            if out.quant is None:
                raise CodecError(f"frame applies {kind.value} without a quantiser")
            out.entropy = EntropyParams.from_bytes(data, out.quant.levels)
        elif data:
            raise CodecError(f"frame gives {kind.value} {len(data)} parameter bytes; it takes none")
        stages.append(CodecStage(kind))
    return out


def _check_value_dtype(header: FrameHeader) -> None:
    if header.spec.value.kind is not StageKind.RAW and header.dtype.kind != "f":
        raise CodecError(f"frame applies {header.spec.value.kind.value} to {header.dtype} values")


__all__ = [
    "MAGIC",
    "DecodeLimits",
    "FrameHeader",
    "build_frame",
    "checksum",
    "dtype_code",
    "parse_header",
]
