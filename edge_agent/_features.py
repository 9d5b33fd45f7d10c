"""Feature encoding for offload with ``common.codecs``: the payload of an offload is one
self-describing codec frame (``raw`` included), so the gateway decodes every request the same
way. Raw little-endian float32 without a frame is used only when ``common.codecs`` cannot be
imported (``EncodedFeatures.framed`` is then False)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

RAW = "raw"


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``."""
    import google_crc32c

    return int(google_crc32c.value(data))


@dataclasses.dataclass(frozen=True)
class EncodedFeatures:
    """Coded features plus what the InferHeader's ``encoding`` needs to describe them."""

    payload: bytes
    codec: str
    """Canonical codec spec text (``raw`` for uncoded float32)."""
    dtype: str
    shape: tuple[int, ...]
    original_bytes: int
    crc32c: int
    framed: bool = True
    """True when ``payload`` is a common.codecs frame; False for bare float32 bytes."""
    parts: tuple[tuple[str, EncodedFeatures], ...] = ()
    """The tensors of a multi-tensor cut, by the tail input each feeds (``payload`` is their
    payloads in this order); empty for one tensor."""


def _codecs() -> Any | None:
    try:
        import common.codecs as codecs
    except ImportError:  # pragma: no cover - the codecs package ships with common
        return None
    return codecs


def entropy_models(bundle: Any) -> dict[str, tuple[str, Any]]:
    """Cut point -> (canonical spec, entropy model) for cuts whose default codec has a model
    fitted offline (``codec-sweep --write``). Without it, frames carry their own histogram and
    come out larger (about 1.15 instead of 0.85 bits per element on the reference cut1)."""
    codecs = _codecs()
    out: dict[str, tuple[str, Any]] = {}
    if codecs is None:
        return out
    for cut in bundle.cut_points:
        if cut.codec is not None and cut.codec.entropy_model:
            model = codecs.EntropyModel.load(bundle.file_path(cut.codec.entropy_model))
            out[cut.name] = (str(codecs.parse_spec(cut.codec.default)), model)
    return out


def model_for(models: dict[str, tuple[str, Any]], cut: str, codec: str | None) -> Any | None:
    """The cut's entropy model when ``codec`` is the spec it was fitted for, else None."""
    entry = models.get(cut)
    codecs = _codecs()
    if entry is None or codecs is None or not codec:
        return None
    return entry[1] if str(codecs.parse_spec(codec)) == entry[0] else None


def encode_features(
    array: np.ndarray, codec: str | None, entropy_model: Any | None = None
) -> EncodedFeatures:
    """Encode ``array`` with codec spec ``codec`` (``raw`` when None) into a codec frame, with
    the offline-fitted ``entropy_model`` when one matches the spec."""
    arr = np.ascontiguousarray(array, dtype=np.float32)
    spec = (codec or RAW).strip() or RAW
    codecs = _codecs()
    if codecs is None:
        payload = arr.astype("<f4", copy=False).tobytes()
        return EncodedFeatures(
            payload=payload,
            codec=RAW,
            dtype="float32",
            shape=tuple(int(d) for d in arr.shape),
            original_bytes=arr.nbytes,
            crc32c=crc32c(payload),
            framed=False,
        )
    frame = codecs.encode(arr, spec, entropy_model=entropy_model)
    header = codecs.peek_header(frame)
    return EncodedFeatures(
        payload=bytes(frame),
        codec=str(header.spec),
        dtype=str(header.dtype),
        shape=tuple(int(d) for d in header.shape),
        original_bytes=int(header.original_bytes),
        crc32c=int(header.crc32c),
    )


def combine_features(parts: Mapping[str, EncodedFeatures]) -> EncodedFeatures:
    """One offload of a multi-tensor cut (an FPN's lateral outputs...): each tensor coded on its
    own (its own codec), their payloads concatenated in order; sent as ``InferHeader.parts``."""
    if not parts:
        raise ValueError("a multi-tensor offload needs at least one tensor")
    items = tuple(parts.items())
    payload = b"".join(f.payload for _, f in items)
    first = items[0][1]
    return EncodedFeatures(
        payload=payload,
        codec="+".join(f.codec for _, f in items),
        dtype=first.dtype,
        shape=(),
        original_bytes=sum(f.original_bytes for _, f in items),
        crc32c=crc32c(payload),
        framed=all(f.framed for _, f in items),
        parts=items,
    )


def encode_cut(
    tensors: Mapping[str, np.ndarray], codecs: Mapping[str, str | None] | str | None = None
) -> EncodedFeatures:
    """Encode the tensors of a cut, each with its codec (one spec for all, or one per name;
    ``raw`` when None), as one multi-tensor offload (:func:`combine_features`)."""
    per = codecs if isinstance(codecs, Mapping) else dict.fromkeys(tensors, codecs)
    return combine_features({n: encode_features(a, per.get(n)) for n, a in tensors.items()})


def decode_features(payload: bytes, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Inverse of :func:`encode_features` (frames; bare float32 needs ``shape``)."""
    codecs = _codecs()
    if codecs is not None and shape is None:
        return np.asarray(codecs.decode(payload))
    if shape is None:
        raise ValueError("bare float32 payload needs its shape")
    return np.frombuffer(payload, dtype="<f4").reshape(shape).astype(np.float32)


__all__ = [
    "RAW",
    "EncodedFeatures",
    "combine_features",
    "crc32c",
    "decode_features",
    "encode_cut",
    "encode_features",
    "entropy_models",
    "model_for",
]
