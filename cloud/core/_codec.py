"""Feature payload decoding for session requests: raw elements, or a common.codecs frame."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cloud.core._types import ModelSpec
from common.errors import CodecError, InvalidArgument

CODEC_RAW = 1
"""Wire id of the raw codec (aiml021.common.v1.CodecKind.CODEC_KIND_RAW)."""
_ITEMSIZE: dict[str, int] = {}


@dataclass(slots=True)
class PayloadFormat:
    """What a request header declares about its payload."""

    dtype: str
    """numpy dtype name of the decoded tensor."""
    shape: tuple[int, ...]
    codec_stages: tuple[int, ...]
    """CodecKind wire ids of the pipeline; empty or (RAW,) means raw elements."""
    codec_name: str = "raw"
    """Canonical codec text, for metrics."""

    @property
    def is_raw(self) -> bool:
        return self.codec_stages in ((), (CODEC_RAW,))

    def raw_bytes(self) -> int:
        """Bytes of the decoded tensor (computed with Python ints: no overflow, no allocation)."""
        size = _ITEMSIZE.get(self.dtype)
        if size is None:
            size = _ITEMSIZE[self.dtype] = np.dtype(self.dtype).itemsize
        return math.prod(self.shape) * size


def decode_payload(
    payload: bytes, fmt: PayloadFormat, max_decoded_bytes: int, entropy_models: Any = None
) -> np.ndarray:
    """Decode ``payload`` into an array of ``fmt.dtype`` and ``fmt.shape``.

    A raw payload of exactly ``prod(shape) * itemsize`` bytes is taken as the elements
    themselves; anything else must be a ``common.codecs`` frame (``raw`` frames included), decoded
    with its declared size bounded by ``max_decoded_bytes`` before anything is allocated.
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
        return np.frombuffer(payload, dtype=fmt.dtype).reshape(fmt.shape)
    from common import codecs

    limits = codecs.DecodeLimits(
        max_elements=max(1, max_decoded_bytes // 4), max_bytes=max_decoded_bytes
    )
    try:
        arr = np.asarray(codecs.decode(payload, limits=limits, entropy_models=entropy_models))
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"cannot decode {fmt.codec_name!r} payload: {exc}") from exc
    if arr.dtype != fmt.dtype or tuple(arr.shape) != fmt.shape:
        raise InvalidArgument(
            f"decoded tensor is {arr.dtype.name}{list(arr.shape)} but the header declared "
            f"{fmt.dtype}{list(fmt.shape)}"
        )
    return arr


def check_payload_format(spec: ModelSpec, fmt: PayloadFormat) -> None:
    """Reject a header whose declared payload (dtype, shape, batch) ``spec`` cannot take: checked
    before any byte of it is buffered."""
    t = spec.inputs[0]
    if len(spec.inputs) != 1:
        raise InvalidArgument(
            f"model {spec.key} takes {len(spec.inputs)} inputs; sessions send one"
        )
    if fmt.dtype != t.dtype:
        raise InvalidArgument(
            f"model {spec.key}: input {t.name!r} needs dtype {t.dtype}, header declares {fmt.dtype}"
        )
    shape = fmt.shape if len(fmt.shape) == len(t.shape) else (1, *fmt.shape)
    if (
        len(shape) != len(t.shape)
        or shape[0] < 1
        or any(w not in (-1, g) for w, g in zip(t.shape[1:], shape[1:], strict=True))
    ):
        raise InvalidArgument(
            f"model {spec.key}: input {t.name!r} needs shape {list(t.shape)} (-1 = any), header "
            f"declares {list(fmt.shape)}"
        )
    if shape[0] > spec.max_batch_size:
        raise InvalidArgument(
            f"model {spec.key}: batch of {shape[0]} exceeds max batch size {spec.max_batch_size}"
        )


__all__ = ["CODEC_RAW", "PayloadFormat", "check_payload_format", "decode_payload"]
