"""The multi-objective the policies optimise: errors, latency against the SLA, SLA breaches,
cloud cost and bytes on the wire, folded into one per-request cost (lower is better). A policy's
reward is the negative cost, so rewards from different requests add up to the same objective."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

FloatLike = TypeVar("FloatLike", float, npt.NDArray[np.float64])


@dataclass(frozen=True, slots=True)
class ObjectiveWeights:
    """Weights of the combined objective (per request)."""

    error: float = 4.0
    """Cost of a wrong answer."""
    latency: float = 1.0
    """Cost per SLA of latency (latency / deadline)."""
    breach: float = 1.0
    """Extra cost when the latency exceeds the deadline."""
    cloud_per_request: float = 0.1
    """Cloud cost units per offloaded request."""
    cloud_per_ms: float = 0.1
    """Cloud cost units per millisecond of cloud compute."""
    cost: float = 1.0
    """Weight of the cloud cost units."""
    bytes_per_unit: float = 10_000.0
    """Bytes that cost one unit."""
    bytes: float = 0.2
    """Weight of the byte units."""

    def cloud_cost(self, cloud_ms: FloatLike, offloaded: FloatLike) -> FloatLike:
        """Cloud cost units of a request that used ``cloud_ms`` of cloud compute."""
        return self.cloud_per_request * offloaded + self.cloud_per_ms * cloud_ms

    def request_cost(
        self,
        correct: FloatLike,
        latency_ms: FloatLike,
        deadline_ms: FloatLike,
        cloud_cost: FloatLike,
        n_bytes: FloatLike,
    ) -> FloatLike:
        """Combined cost of one request (or element-wise over arrays)."""
        lat = latency_ms / deadline_ms
        return (
            self.error * (1.0 - correct)
            + self.latency * lat
            + self.breach * (lat > 1.0)
            + self.cost * cloud_cost
            + self.bytes * n_bytes / self.bytes_per_unit
        )

    def step_cost(self, extra_ms: float, deadline_ms: float) -> float:
        """Cost of spending ``extra_ms`` more on a request (its share of the latency term)."""
        return self.latency * extra_ms / deadline_ms


__all__ = ["ObjectiveWeights"]
