"""The batching seam: what the data plane needs from a batcher, and how it asks for one.

The data plane never builds a batcher itself; the composition root hands it a
:class:`BatcherFactory` (``cloud.batching.DynamicBatching``), so the core does not depend on the
batching implementation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import numpy as np

from cloud.core._types import InferenceResult, ModelKey, ModelSpec

RunFn = Callable[[Mapping[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]
"""Runs one batch (inputs with the batch dimension first) through the backend."""

BatchObserver = Callable[[ModelKey, int, float, float, float], None]
"""Called after each batch with (key, samples, compute seconds, input stacking seconds, output
slicing seconds)."""


class Batcher(Protocol):
    """Queues requests of one model version and runs them in batches."""

    key: ModelKey
    batches: int
    """Batches run so far."""
    samples: int
    """Samples (rows) computed so far."""

    @property
    def ready(self) -> bool:
        """True while the batcher can compute (started, not closed, its workers running)."""
        ...

    def start(self) -> None:
        """Start the workers (inside the running loop)."""

    def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        outputs: tuple[str, ...] = (),
        deadline: float | None = None,
        priority: int = 2,
        flow: str = "",
    ) -> asyncio.Future[InferenceResult]:
        """Queue one request of ``rows`` samples for ``flow`` (the device it came from: devices
        share compute fairly); the future resolves to its result."""
        ...

    def withdraw(self, fut: asyncio.Future[InferenceResult]) -> bool:
        """Cancel ``fut`` only while still queued; True when withdrawn."""
        ...

    async def close(self) -> None:
        """Stop the workers; queued requests fail with UNAVAILABLE."""


class BatcherFactory(Protocol):
    """Builds the batcher of one model version (not started)."""

    def __call__(self, spec: ModelSpec, run: RunFn, observer: BatchObserver) -> Batcher: ...


__all__ = ["BatchObserver", "Batcher", "BatcherFactory", "RunFn"]
