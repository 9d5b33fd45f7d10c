"""Feature payload decoding for session requests: raw elements, or a common.codecs frame."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from common import dtypes
from common.errors import CodecError, InvalidArgument

CODEC_RAW = 1
"""Wire id of the raw codec (aiml021.common.v1.CodecKind.CODEC_KIND_RAW)."""


@dataclass(slots=True)
class PayloadFormat:
    """What a request header declares about its payload."""

    dtype: str
    """numpy dtype name of the decoded tensor."""
    shape: tuple[int, ...]
    codec_stages: tuple[int, ...]
    """CodecKind wire ids of the pipeline; empty or (RAW,) means raw elements."""
    codec_name: str = "raw"
    """Canonical codec text, for metrics and records; decoding sets it from the frame."""

    @property
    def is_raw(self) -> bool:
        return self.codec_stages in ((), (CODEC_RAW,))

    def raw_bytes(self) -> int:
        """Bytes of the decoded tensor (computed with Python ints: no overflow, no allocation)."""
        return math.prod(self.shape) * dtypes.lookup(self.dtype).itemsize


@dataclass(slots=True)
class PayloadPart:
    """One tensor of a multi-tensor request (``InferHeader.parts``): the model input it feeds,
    what its header declares, and how many of the payload's bytes are its own."""

    name: str
    format: PayloadFormat
    nbytes: int


def split_payload(payload: bytes, parts: tuple[PayloadPart, ...]) -> list[bytes]:
    """The bytes of each part, in order (the sizes were checked against the payload's length
    when the header was accepted)."""
    out, offset = [], 0
    view = memoryview(payload)
    for part in parts:
        out.append(bytes(view[offset : offset + part.nbytes]))
        offset += part.nbytes
    return out


def decode_payload(
    payload: bytes, fmt: PayloadFormat, max_decoded_bytes: int, entropy_models: Any = None
) -> np.ndarray:
    """Decode ``payload`` into an array of ``fmt.dtype`` and ``fmt.shape``.

    A raw payload of exactly ``prod(shape) * itemsize`` bytes is taken as the elements
    themselves; anything else must be a ``common.codecs`` frame (``raw`` frames included), decoded
    with its declared size bounded by ``max_decoded_bytes`` before anything is allocated. The
    frame is the one description of its codec: ``fmt.codec_name`` becomes its canonical spec.
    ``entropy_models`` (a ``common.codecs.EntropyModel``, a list or None) is what ANS/range frames
    coded with an offline model are decoded with.
    """
    raw_size = fmt.raw_bytes()
    if raw_size > max_decoded_bytes:
        raise InvalidArgument(
            f"declared tensor of shape {list(fmt.shape)} needs {raw_size} bytes, over the "
            f"limit of {max_decoded_bytes}"
        )
    if fmt.is_raw and len(payload) == raw_size:
        fmt.codec_name = "raw"
        return np.frombuffer(payload, dtype=fmt.dtype).reshape(fmt.shape)
    from common import codecs

    limits = codecs.DecodeLimits(
        max_elements=max(1, max_decoded_bytes // 4), max_bytes=max_decoded_bytes
    )

    def as_declared(frame: Any) -> None:
        # The frame is held to the header (already checked against the model) before its payload
        # is decoded: nothing is allocated for a frame that disagrees. It names its own codec:
        # the header need not describe it a second time.
        if frame.dtype != fmt.dtype or tuple(frame.shape) != fmt.shape:
            raise InvalidArgument(
                f"frame holds {frame.dtype.name}{list(frame.shape)} but the header declared "
                f"{fmt.dtype}{list(fmt.shape)}"
            )
        fmt.codec_name = str(frame.spec)

    try:
        return np.asarray(
            codecs.decode(payload, limits=limits, entropy_models=entropy_models, check=as_declared)
        )
    except InvalidArgument:
        raise
    except Exception as exc:
        raise CodecError(f"cannot decode {fmt.codec_name!r} payload: {exc}") from exc


__all__ = ["CODEC_RAW", "PayloadFormat", "PayloadPart", "decode_payload", "split_payload"]
