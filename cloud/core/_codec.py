"""Feature payload decoding for session requests: raw elements, or a common.codecs frame."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from common.errors import CodecError, InvalidArgument

CODEC_RAW = 1
"""Wire id of the raw codec (aiml021.common.v1.CodecKind.CODEC_KIND_RAW)."""


@dataclass(frozen=True, slots=True)
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
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def decode_payload(payload: bytes, fmt: PayloadFormat, max_decoded_bytes: int) -> np.ndarray:
    """Decode ``payload`` into an array of ``fmt.dtype`` and ``fmt.shape``.

    Raw payloads must have exactly ``prod(shape) * itemsize`` bytes. Other codecs go through
    ``common.codecs.decode`` with the decoded size bounded by ``max_decoded_bytes``.
    """
    raw_size = fmt.raw_bytes()
    if raw_size > max_decoded_bytes:
        raise InvalidArgument(
            f"declared tensor of shape {list(fmt.shape)} needs {raw_size} bytes, over the "
            f"limit of {max_decoded_bytes}"
        )
    if fmt.is_raw:
        if len(payload) == raw_size:
            return np.frombuffer(payload, dtype=fmt.dtype).reshape(fmt.shape)
        raise InvalidArgument(
            f"raw payload has {len(payload)} bytes but shape {list(fmt.shape)} of "
            f"{fmt.dtype} needs {raw_size}"
        )
    return _decode_frame(payload, fmt, max_decoded_bytes)


def _decode_frame(payload: bytes, fmt: PayloadFormat, max_decoded_bytes: int) -> np.ndarray:
    try:
        from common import codecs
    except ImportError as exc:  # pragma: no cover - codecs are part of the product
        raise InvalidArgument(f"codec {fmt.codec_name!r} is not available: {exc}") from exc
    decode = getattr(codecs, "decode", None)
    limits_type = getattr(codecs, "DecodeLimits", None)
    if decode is None:
        raise InvalidArgument(f"codec {fmt.codec_name!r} is not supported by this gateway build")
    try:
        if limits_type is not None:
            arr = decode(payload, limits=_limits(limits_type, max_decoded_bytes))
        else:
            arr = decode(payload)
    except CodecError:
        raise
    except Exception as exc:
        raise CodecError(f"cannot decode {fmt.codec_name!r} payload: {exc}") from exc
    arr = np.asarray(arr)
    if arr.dtype.name != fmt.dtype or tuple(arr.shape) != fmt.shape:
        raise InvalidArgument(
            f"decoded tensor is {arr.dtype.name}{list(arr.shape)} but the header declared "
            f"{fmt.dtype}{list(fmt.shape)}"
        )
    return arr


def _limits(limits_type: type, max_decoded_bytes: int) -> object:
    import dataclasses
    import inspect

    names: set[str] = set()
    if dataclasses.is_dataclass(limits_type):
        names = {f.name for f in dataclasses.fields(limits_type)}
    else:
        names = set(inspect.signature(limits_type).parameters)
    kwargs = {n: max_decoded_bytes for n in ("max_bytes", "max_decoded_bytes", "max_output_bytes")}
    return limits_type(**{k: v for k, v in kwargs.items() if k in names})


__all__ = ["CODEC_RAW", "PayloadFormat", "decode_payload"]
