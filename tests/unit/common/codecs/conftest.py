"""Shared fixtures: synthetic ReLU-like activations (sparse, non-negative, heavy-tailed)."""

from __future__ import annotations

import numpy as np
import pytest


def relu_activations(seed: int, shape: tuple[int, ...] = (1, 32, 14, 14)) -> np.ndarray:
    """Half zeros, gamma-tailed positives, fixed per-channel scale differences, float32."""
    rng = np.random.default_rng(seed)
    pre = rng.standard_normal(shape).astype(np.float32) - 0.2
    # Channels differ from each other the same way in every sample, as in a real network.
    fixed = np.random.default_rng(12345)
    channel_scale = fixed.uniform(0.05, 2.0, size=(1, shape[1], 1, 1)).astype(np.float32)
    tail = rng.gamma(1.2, 1.0, size=shape).astype(np.float32)
    return np.maximum(pre, 0) * tail * channel_scale


@pytest.fixture
def activation() -> np.ndarray:
    return relu_activations(0)
