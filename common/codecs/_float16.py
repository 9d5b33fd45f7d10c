"""float16 value stage: halves the size of float32 features, saturating instead of overflowing."""

from __future__ import annotations

import numpy as np

F16_MAX = 65504.0


def to_float16(x: np.ndarray) -> np.ndarray:
    """float16 copy of ``x``; finite values beyond ±65504 become ±65504 (inf and NaN stay)."""
    with np.errstate(over="ignore"):
        out = x.astype(np.float16)
    overflow = np.isinf(out) & np.isfinite(x)
    if overflow.any():
        out[overflow] = np.copysign(F16_MAX, x[overflow])
    return out


__all__ = ["F16_MAX", "to_float16"]
