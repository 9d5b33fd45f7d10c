"""Sparsification: zero small values (threshold) or keep the top-k, and index the survivors.

The index is a bitmap (1 bit per element: best from about 3% non-zeros up) or run lengths (the
count of zeros before each non-zero as a LEB128 varint: best for very sparse tensors). Values
are stored for the non-zero positions only.
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from common.codecs._spec import CodecStage, SparseIndex
from common.errors import CodecError

_PARAMS = struct.Struct("<BII")
_INDEX_CODE = {SparseIndex.BITMAP: 0, SparseIndex.RUN_LENGTH: 1}
_INDEX_BY_CODE = {v: k for k, v in _INDEX_CODE.items()}
_MAX_VARINT = 5  # bytes of a uint32 LEB128 varint


@dataclasses.dataclass(frozen=True)
class SparseParams:
    """Frame parameters of the sparse stage."""

    index: SparseIndex
    nnz: int  # number of stored (non-zero) values
    index_bytes: int  # length of the index section that opens the payload

    def to_bytes(self) -> bytes:
        return _PARAMS.pack(_INDEX_CODE[self.index], self.nnz, self.index_bytes)

    @classmethod
    def from_bytes(cls, data: bytes, count: int) -> SparseParams:
        """Parse and check against the element count; CodecError when inconsistent."""
        if len(data) != _PARAMS.size:
            raise CodecError(f"sparse parameters are {len(data)} bytes, expected {_PARAMS.size}")
        code, nnz, index_bytes = _PARAMS.unpack(data)
        index = _INDEX_BY_CODE.get(code)
        if index is None:
            raise CodecError(f"unknown sparse index kind {code}")
        if nnz > count:
            raise CodecError(f"sparse frame declares {nnz} non-zeros for {count} elements")
        if index is SparseIndex.BITMAP and index_bytes != (count + 7) // 8:
            raise CodecError(f"sparse bitmap is {index_bytes} bytes, expected {(count + 7) // 8}")
        if index is SparseIndex.RUN_LENGTH and not nnz <= index_bytes <= _MAX_VARINT * nnz:
            raise CodecError(f"run-length index of {index_bytes} bytes for {nnz} non-zeros")
        return cls(index, nnz, index_bytes)


def sparsify(x: np.ndarray, stage: CodecStage) -> np.ndarray:
    """Zero values below the threshold, or all but the top fraction by magnitude (copy)."""
    if stage.keep_fraction:
        flat = x.reshape(-1)
        keep = int(np.ceil(stage.keep_fraction * flat.size))
        if keep >= flat.size:
            return x
        out = np.zeros_like(flat)
        top = np.argpartition(np.abs(flat), flat.size - keep)[flat.size - keep :]
        out[top] = flat[top]
        return out.reshape(x.shape)
    if stage.threshold:
        return np.where(np.abs(x) < stage.threshold, np.zeros((), x.dtype), x)
    return x


def encode_index(mask: np.ndarray, index: SparseIndex) -> bytes:
    """Index bytes for a flat boolean mask of non-zero positions."""
    if index is SparseIndex.BITMAP:
        return np.packbits(mask).tobytes()
    pos = np.flatnonzero(mask)
    gaps = np.diff(pos, prepend=-1) - 1
    nbytes = np.ones(gaps.size, np.int64)
    for k in range(1, _MAX_VARINT):
        nbytes += gaps >= (1 << (7 * k))
    starts = np.cumsum(nbytes) - nbytes
    out = np.zeros(int(nbytes.sum()), np.uint8)
    for k in range(_MAX_VARINT):
        sel = nbytes > k
        if not sel.any():
            break
        byte = (gaps[sel] >> (7 * k)) & 0x7F
        byte |= np.where(nbytes[sel] > k + 1, 0x80, 0)
        out[starts[sel] + k] = byte
    return out.tobytes()


def decode_index(data: memoryview, params: SparseParams, count: int) -> np.ndarray:
    """Flat boolean mask from index bytes; CodecError when they do not match the parameters."""
    raw = np.frombuffer(data, np.uint8)
    if params.index is SparseIndex.BITMAP:
        mask = np.unpackbits(raw, count=count).astype(bool)
        if int(np.count_nonzero(mask)) != params.nnz:
            raise CodecError(
                f"sparse bitmap has {np.count_nonzero(mask)} bits set, frame says {params.nnz}"
            )
        return mask
    ends = np.flatnonzero(raw < 0x80)
    if ends.size != params.nnz or (raw.size and raw[-1] >= 0x80):
        raise CodecError(f"run-length index holds {ends.size} runs, frame says {params.nnz}")
    starts = np.concatenate(([0], ends[:-1] + 1)) if ends.size else ends
    if ends.size and int((ends - starts).max()) >= _MAX_VARINT:
        raise CodecError("run-length index has an over-long varint")
    group = np.repeat(np.arange(ends.size), ends - starts + 1)
    shift = 7 * (np.arange(raw.size) - starts[group])
    gaps = np.zeros(ends.size, np.int64)
    np.add.at(gaps, group, (raw & 0x7F).astype(np.int64) << shift)
    pos = np.cumsum(gaps + 1) - 1
    if pos.size and int(pos[-1]) >= count:
        raise CodecError(f"run-length index points past the {count} elements")
    mask = np.zeros(count, bool)
    mask[pos] = True
    return mask


__all__ = ["SparseParams", "decode_index", "encode_index", "sparsify"]
