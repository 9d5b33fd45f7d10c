"""Affine integer quantisation (int8 and 2..7 bits), per tensor or per channel, with clipping.

``real = scale * (q - zero_point)``; the range always contains 0 so that 0.0 maps to an exact
symbol (ReLU activations are mostly zeros, which sparsity and entropy coding exploit). A value
inside the quantiser's range is reconstructed within ``scale / 2``; values outside are clamped.
The clip range comes from the activation statistics: a percentile, the MSE-optimal clip for the
bit width, or a fixed range calibrated offline (which keeps the symbol distribution stable, so
an offline entropy model matches it).
"""

from __future__ import annotations

import dataclasses
import struct

import numpy as np

from common.codecs._spec import ClipMethod, CodecStage
from common.errors import CodecError

PER_TENSOR = 255  # axis byte meaning "one scale for the whole tensor"
_HEAD = struct.Struct("<BBBI")
_MSE_CANDIDATES = np.linspace(0.02, 1.0, 50)
_MSE_SAMPLE = 65536
_F32_MAX = float(np.finfo(np.float32).max)
_F32_TINY = float(np.finfo(np.float32).tiny)


@dataclasses.dataclass(frozen=True, eq=False)
class QuantParams:
    """Scale and zero point, one per tensor or one per channel along ``axis``."""

    bits: int
    axis: int  # PER_TENSOR or the channel axis
    scale: np.ndarray  # float32, shape (C,)
    zero_point: np.ndarray  # uint8, shape (C,)
    gamma: float = 1.0  # companding exponent (multiple of 0.01)

    @property
    def levels(self) -> int:
        return 1 << self.bits

    @property
    def per_channel(self) -> bool:
        return self.axis != PER_TENSOR

    def to_bytes(self) -> bytes:
        return (
            _HEAD.pack(self.bits, self.axis, round(self.gamma * 100), len(self.scale))
            + self.scale.astype("<f4").tobytes()
            + self.zero_point.astype(np.uint8).tobytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes, shape: tuple[int, ...]) -> QuantParams:
        """Parse and validate against the tensor shape; CodecError on any inconsistency."""
        if len(data) < _HEAD.size:
            raise CodecError(f"quantiser parameters truncated ({len(data)} bytes)")
        bits, axis, gamma_code, count = _HEAD.unpack_from(data)
        if not 10 <= gamma_code <= 255:
            raise CodecError(
                f"quantiser companding exponent {gamma_code / 100} outside [0.1, 2.55]"
            )
        if not 2 <= bits <= 8:
            raise CodecError(f"quantiser bit width {bits} outside 2..8")
        if axis == PER_TENSOR:
            expected = 1
        elif axis < len(shape):
            expected = shape[axis]
        else:
            raise CodecError(f"quantiser channel axis {axis} out of range for shape {shape}")
        if count != expected or len(data) != _HEAD.size + 5 * count:
            raise CodecError(
                f"quantiser parameters: {count} channels in {len(data)} bytes, expected "
                f"{expected} channels ({_HEAD.size + 5 * expected} bytes) for shape {shape}"
            )
        scale = np.frombuffer(data, "<f4", count, _HEAD.size).astype(np.float32)
        zero = np.frombuffer(data, np.uint8, count, _HEAD.size + 4 * count)
        with np.errstate(all="ignore"):  # NaN/inf scales are reported below, not warned about
            span = scale.astype(np.float64) * (1 << bits)
            bad = count > 0 and (
                not np.all(np.isfinite(scale)) or np.any(scale <= 0) or span.max() > _F32_MAX
            )
        if bad:
            raise CodecError("quantiser scale is not a positive finite number within float32 range")
        if count and int(zero.max()) >= 1 << bits:
            raise CodecError(f"quantiser zero point {int(zero.max())} outside {bits}-bit range")
        return cls(bits, axis, scale, zero, gamma_code / 100)


def clip_range(x: np.ndarray, clip: CodecStage | None, bits: int) -> tuple[float, float] | None:
    """The (min, max) range a clip stage chooses for ``x`` (None: no clipping)."""
    if clip is None:
        return None
    if clip.clip_method is ClipMethod.FIXED:
        return clip.clip_min, clip.clip_max
    if x.size == 0:
        return 0.0, 0.0
    flat = x.reshape(-1)
    if clip.clip_method is ClipMethod.PERCENTILE:
        p = clip.clip_percentile
        hi = max(float(np.percentile(flat, p)), 0.0)
        lo = min(float(np.percentile(flat, 100.0 - p)), 0.0) if flat.min() < 0 else 0.0
        return lo, hi
    return _mse_range(flat, bits or 8)


def _mse_range(flat: np.ndarray, bits: int) -> tuple[float, float]:
    if flat.size > _MSE_SAMPLE:
        flat = flat[:: flat.size // _MSE_SAMPLE + 1]
    lo0, hi0 = min(float(flat.min()), 0.0), max(float(flat.max()), 0.0)
    if hi0 == lo0:
        return lo0, hi0
    x = flat.astype(np.float64)[None, :]
    lo = lo0 * _MSE_CANDIDATES[:, None]
    hi = hi0 * _MSE_CANDIDATES[:, None]
    scale = (hi - lo) / ((1 << bits) - 1)
    zp = np.rint(-lo / scale)
    q = np.clip(np.rint(x / scale) + zp, 0, (1 << bits) - 1)
    err = np.mean(((q - zp) * scale - x) ** 2, axis=1)
    best = int(np.argmin(err))
    return float(lo[best, 0]), float(hi[best, 0])


def compand(x: np.ndarray | float, gamma: float) -> np.ndarray:
    """sign(x) * |x| ** gamma (float32 for arrays)."""
    a = np.asarray(x, np.float32 if isinstance(x, np.ndarray) else np.float64)
    return np.copysign(np.power(np.abs(a), gamma), a)


def _channel_view(x: np.ndarray, axis: int) -> np.ndarray:
    rest = x.size // x.shape[axis] if x.shape[axis] else 0
    return np.moveaxis(x, axis, 0).reshape(x.shape[axis], rest)


def choose_params(
    x: np.ndarray,
    bits: int,
    per_channel: bool,
    rng: tuple[float, float] | None,
    gamma: float = 1.0,
) -> QuantParams:
    """Scale/zero point covering ``x`` (or the clip range ``rng``), 0 exactly representable."""
    axis = (1 if x.ndim >= 2 else 0) if per_channel and x.ndim >= 1 else PER_TENSOR
    if axis == PER_TENSOR:
        if rng is not None:
            lo, hi = np.array([rng[0]]), np.array([rng[1]])
        elif x.size:
            lo, hi = np.array([float(x.min())]), np.array([float(x.max())])
        else:
            lo, hi = np.zeros(1), np.zeros(1)
    else:
        view = _channel_view(x, axis)
        if view.shape[1]:
            lo, hi = view.min(axis=1).astype(np.float64), view.max(axis=1).astype(np.float64)
        else:
            lo, hi = np.zeros(view.shape[0]), np.zeros(view.shape[0])
        if rng is not None:
            lo, hi = np.maximum(lo, rng[0]), np.minimum(hi, rng[1])
    lo, hi = np.minimum(lo, 0.0), np.maximum(hi, 0.0)
    top = (1 << bits) - 1
    scale = (hi - lo) / top
    scale[scale == 0] = 1.0
    # A step below float32's smallest normal number (all-denormal tensors) would overflow the
    # reciprocal the divide in quantize() uses; such a tensor is coded with that smallest step.
    scale = np.maximum(scale, _F32_TINY)
    scale32 = scale.astype(np.float32)
    if not np.all(np.isfinite(scale32)) or np.any(scale32 <= 0):
        raise CodecError("value range cannot be quantised (scale overflows float32)")
    zero = np.clip(np.rint(-lo / scale32.astype(np.float64)), 0, top).astype(np.uint8)
    return QuantParams(bits, axis, scale32, zero, gamma)


def _broadcast(values: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    if axis == PER_TENSOR:
        return values[0]
    shape = [1] * ndim
    shape[axis] = values.shape[0]
    return values.reshape(shape)


def quantize(x: np.ndarray, params: QuantParams) -> np.ndarray:
    """Symbols (uint8, same shape as ``x``) for float ``x``."""
    if x.ndim == 0:
        return quantize(x.reshape(1), params).reshape(())
    scale = _broadcast(params.scale, x.ndim, params.axis)
    zero = _broadcast(params.zero_point.astype(np.float32), x.ndim, params.axis)
    with np.errstate(over="ignore"):  # far outside a narrow range: inf, clamped to the top level
        q = np.divide(x, scale, dtype=np.float32)
    np.rint(q, out=q)
    q += zero
    np.clip(q, 0, params.levels - 1, out=q)
    return q.astype(np.uint8)


def dequantize(symbols: np.ndarray, params: QuantParams) -> np.ndarray:
    """Float32 reconstruction of symbols (shaped like the tensor)."""
    if params.axis == PER_TENSOR:
        lut = (np.arange(params.levels, dtype=np.float32) - np.float32(params.zero_point[0])) * (
            params.scale[0]
        )
        if params.gamma != 1.0:
            lut = compand(lut, 1.0 / params.gamma).astype(np.float32)
        return lut[symbols]
    scale = _broadcast(params.scale, symbols.ndim, params.axis)
    zero = _broadcast(params.zero_point.astype(np.float32), symbols.ndim, params.axis)
    out = (symbols.astype(np.float32) - zero) * scale
    return out if params.gamma == 1.0 else compand(out, 1.0 / params.gamma)


def zero_symbols(params: QuantParams, shape: tuple[int, ...]) -> np.ndarray | np.uint8:
    """The symbol that decodes to 0.0, broadcastable to ``shape``."""
    return _broadcast(params.zero_point, len(shape), params.axis)


def pack_bits(symbols: np.ndarray, bits: int) -> bytes:
    """Pack uint8 symbols into ``bits`` bits each, an MSB-first bit stream.

    Eight symbols make ``bits`` whole bytes, so groups of eight are packed with 64-bit shifts.
    """
    flat = symbols.reshape(-1)
    if bits == 8:
        return flat.tobytes()
    count = flat.size
    padded = np.zeros((count + 7) // 8 * 8, np.uint64)
    padded[:count] = flat
    groups = padded.reshape(-1, 8)
    word = np.zeros(groups.shape[0], np.uint64)
    for j in range(8):
        word |= groups[:, j] << np.uint64(bits * (7 - j))
    raw = word.astype(">u8").view(np.uint8).reshape(-1, 8)[:, 8 - bits :]
    return raw.tobytes()[: packed_size(count, bits)]


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def unpack_bits(data: bytes | memoryview, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`; ``data`` must be exactly ``packed_size(count, bits)`` bytes."""
    raw = np.frombuffer(data, np.uint8)
    if bits == 8:
        return raw.copy()
    ngroups = (count + 7) // 8
    stream = np.zeros(ngroups * bits, np.uint8)
    stream[: raw.size] = raw
    padded = np.zeros((ngroups, 8), np.uint8)
    padded[:, 8 - bits :] = stream.reshape(ngroups, bits)
    word = padded.view(">u8").reshape(-1).astype(np.uint64)
    mask = np.uint64((1 << bits) - 1)
    out = np.empty((ngroups, 8), np.uint8)
    for j in range(8):
        out[:, j] = (word >> np.uint64(bits * (7 - j))) & mask
    return out.reshape(-1)[:count]


__all__ = [
    "PER_TENSOR",
    "QuantParams",
    "choose_params",
    "clip_range",
    "compand",
    "dequantize",
    "pack_bits",
    "packed_size",
    "quantize",
    "unpack_bits",
    "zero_symbols",
]
