"""The backend seam: what runs a model version on an already-batched input.

A backend knows nothing about sessions, deadlines or batching: the batcher hands it arrays whose
first dimension is the batch and expects arrays with the same first dimension back. Backends
raise :mod:`common.errors` types (``Unavailable`` when the engine is down, ``NotFound`` for a key
that was never loaded, ``InvalidArgument`` for inputs the engine rejects).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True, slots=True)
class ModelKey:
    """One served model version. ``name`` is the served name (a bundle's full model, or
    ``<bundle>.<cut point>`` for the tail run from that cut point)."""

    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Name, numpy dtype name (``"float32"``...) and shape of one tensor; ``-1`` is variable
    (the first dimension is always the batch)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample (the shape without the batch dimension)."""
        return self.shape[1:]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Everything a backend needs to load one model version."""

    name: str
    version: str
    onnx_path: Path
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int = 64
    bundle: str = ""
    """Bundle the model comes from (empty for a bare ONNX file)."""
    cut_point: str = ""
    """Cut point whose tail this model is (empty for a full model)."""
    segment: str = ""
    """Segment name inside the bundle (``full``, ``tail_cut1``...)."""
    labels: tuple[str, ...] = field(default=())
    """Class names, for classifiers (index = class id)."""
    temperature: float = 1.0
    """Temperature of the final exit: confidence = max softmax(logits / temperature)."""
    entropy_model: Path | None = None
    """Entropy-model file of the cut point's codec (``cut_points[].codec.entropy_model``), passed
    to ``common.codecs.decode`` for ANS/range frames coded with it."""

    @property
    def key(self) -> ModelKey:
        """The key this spec is served under."""
        return ModelKey(self.name, self.version)


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

    @abstractmethod
    async def ready(self) -> bool:
        """True when the backend can serve requests now."""

    @abstractmethod
    async def close(self) -> None:
        """Release every model and resource; the backend is unusable afterwards."""


__all__ = ["Backend", "ModelKey", "ModelSpec", "TensorSpec"]
