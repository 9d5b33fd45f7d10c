"""Temperature-scaled softmax: the one definition of a calibrated confidence.

Every exit, tail model and trace reports ``confidence = max softmax(logits / temperature)`` with
the temperature calibrated per exit (``aiml021 calibrate``, stored in the bundle manifest). The
bundle calibration, the edge runtime, the gateway's answers and request records and the policy
traces all compute it here, so a device and the gateway never disagree on a confidence.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

MIN_TEMPERATURE = 1e-6
"""Temperatures below this are taken as this (a zero temperature would divide by zero)."""


def softmax(logits: npt.ArrayLike, temperature: float = 1.0) -> npt.NDArray[np.float64]:
    """``softmax(logits / temperature)`` over the last axis, in float64, numerically stable."""
    z = np.asarray(logits, dtype=np.float64) / max(float(temperature), MIN_TEMPERATURE)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


def top_class(logits: npt.ArrayLike, temperature: float = 1.0) -> tuple[int, float]:
    """Top class of one logits vector and its calibrated confidence."""
    p = softmax(np.asarray(logits).reshape(-1), temperature)
    top = int(p.argmax())
    return top, float(p[top])


__all__ = ["MIN_TEMPERATURE", "softmax", "top_class"]
