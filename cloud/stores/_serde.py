"""Byte framing of named tensors for shared stores: Redis values of idempotent results and of
cache entries.

A frame is a little-endian u32 header length, a JSON header (names, dtypes, shapes, offsets and
optional metadata) and the raw row-major bytes of every tensor. No pickle: a store shared by many
replicas must never execute what it reads.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from cloud.core import CacheEntry, InferenceResult
from common import dtypes
from common.errors import DataLoss

_ALLOWED_DTYPES = dtypes.NAMES
_LEN = struct.Struct("<I")


def encode_tensors(
    tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None
) -> bytes:
    """Frame ``tensors`` (and JSON-serialisable ``meta``) into bytes."""
    entries = []
    blobs = []
    offset = 0
    for name, array in tensors.items():
        arr = np.ascontiguousarray(array)
        dtype = arr.dtype.name
        if dtype not in _ALLOWED_DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {dtype} cannot be stored")
        raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        entries.append({"name": name, "dtype": dtype, "shape": list(arr.shape), "offset": offset})
        blobs.append(raw)
        offset += len(raw)
    header = json.dumps({"tensors": entries, "meta": dict(meta or {})}, separators=(",", ":"))
    head = header.encode()
    return _LEN.pack(len(head)) + head + b"".join(blobs)


def decode_tensors(frame: bytes) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Inverse of :func:`encode_tensors`; raises :class:`DataLoss` on a malformed frame."""
    try:
        (hlen,) = _LEN.unpack_from(frame, 0)
        header = json.loads(frame[_LEN.size : _LEN.size + hlen])
        body = memoryview(frame)[_LEN.size + hlen :]
        out: dict[str, np.ndarray] = {}
        for entry in header["tensors"]:
            dtype = np.dtype(entry["dtype"]).newbyteorder("<")
            if entry["dtype"] not in _ALLOWED_DTYPES:
                raise ValueError(f"dtype {entry['dtype']}")
            shape = tuple(int(d) for d in entry["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            start = int(entry["offset"])
            end = start + count * dtype.itemsize
            if end > len(body):
                raise ValueError("truncated tensor data")
            arr = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
            out[str(entry["name"])] = arr.astype(dtype.newbyteorder("="), copy=True)
        return out, dict(header.get("meta", {}))
    except (ValueError, KeyError, TypeError, struct.error) as exc:
        raise DataLoss(f"stored tensor frame is corrupt: {exc}") from exc


def encode_result(result: InferenceResult) -> bytes:
    """Frame an inference result for a shared store (outputs, model, version, batch size)."""
    meta = {
        "model_name": result.model_name,
        "model_version": result.model_version,
        "batch_size": result.batch_size,
    }
    return encode_tensors(result.outputs, meta)


def decode_result(frame: bytes) -> InferenceResult:
    """Inverse of :func:`encode_result` (DataLoss on corruption)."""
    outputs, meta = decode_tensors(frame)
    return InferenceResult(
        model_name=str(meta.get("model_name", "")),
        model_version=str(meta.get("model_version", "")),
        outputs=outputs,
        batch_size=int(meta.get("batch_size", 1)),
    )


def encode_entry(entry: CacheEntry) -> bytes:
    """Serialise an entry for a shared store."""
    meta = {
        "top_class": int(entry.top_class),
        "confidence": float(entry.confidence),
        "model_version": entry.model_version,
        "stored_at": float(entry.stored_at),
    }
    return encode_tensors(entry.outputs, meta)


def decode_entry(frame: bytes) -> CacheEntry:
    """Inverse of :func:`encode_entry` (DataLoss on corruption)."""
    outputs, meta = decode_tensors(frame)
    return CacheEntry(
        outputs=outputs,
        top_class=int(meta.get("top_class", 0)),
        confidence=float(meta.get("confidence", 0.0)),
        model_version=str(meta.get("model_version", "")),
        stored_at=float(meta.get("stored_at", 0.0)),
    )
