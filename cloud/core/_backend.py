"""The backend seam the data plane calls: what runs a model version on an already-batched input.

A backend knows nothing about sessions, deadlines or batching: the batcher hands it arrays whose
first dimension is the batch and expects arrays with the same first dimension back. Backends
raise :mod:`common.errors` types (``Unavailable`` when the engine is down, ``NotFound`` for a key
that was never loaded, ``InvalidArgument`` for inputs the engine rejects).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from cloud.core._types import ModelKey, ModelSpec


class Backend(ABC):
    """Runs loaded model versions on batched numpy inputs."""

    @abstractmethod
    async def load(self, model: ModelSpec) -> None:
        """Make ``model.key`` ready to serve (idempotent for an already-loaded key)."""

    @abstractmethod
    async def unload(self, key: ModelKey) -> None:
        """Release ``key``; later ``infer`` calls for it raise ``NotFound``."""

    @abstractmethod
    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        """Run ``key`` on ``inputs`` (first dimension = batch) and return the named
        ``outputs`` (all of the model's outputs when empty), batch dimension first."""

    def admit(self, key: ModelKey, inputs: Mapping[str, np.ndarray]) -> None:
        """Cheap checks of a request's inputs before it is queued, beyond names, dtypes and
        shapes (e.g. an encoded image's header against the decode limits); raises a
        :mod:`common.errors` type. Default: nothing to check."""
        del key, inputs  # nothing to check by default

    @abstractmethod
    async def ready(self) -> bool:
        """True when the backend can serve requests now."""

    @abstractmethod
    async def close(self) -> None:
        """Release every model and resource; the backend is unusable afterwards."""


__all__ = ["Backend"]
