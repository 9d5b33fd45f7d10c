"""The step registry: named Python functions a pipeline description refers to by ``op``.

A step function takes the runtime (models by name), its inputs in the order the description's
``in`` lists them, and its parameters as keyword arguments; it returns one value, or a tuple
with one value per name in ``out``. Registering a name twice is a programming error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt


class Models(Protocol):
    """What a step may ask of the runtime: a model's session and its metadata."""

    def run(self, model: str, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The model's first output for a single-input feed."""
        ...

    def metadata(self, model: str) -> dict[str, str]:
        """The model's custom metadata (e.g. a recognizer's ``character`` list)."""
        ...


StepFn = Callable[..., Any]

STEPS: dict[str, StepFn] = {}


def step(name: str) -> Callable[[StepFn], StepFn]:
    """Register ``fn`` under ``name`` (the ``op`` of a step in a pipeline description)."""

    def register(fn: StepFn) -> StepFn:
        if name in STEPS:
            raise ValueError(f"pipeline step {name!r} is registered twice")
        STEPS[name] = fn
        return fn

    return register


__all__ = ["STEPS", "Models", "StepFn", "step"]
