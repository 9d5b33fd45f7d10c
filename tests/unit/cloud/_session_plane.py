"""A data plane for session-core tests: one model ``m`` (``x [N, 4] -> y = 2x``) over a backend
whose computations wait at a gate the test opens, and a sink that records every answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    Backend,
    DataPlane,
    InferenceResult,
    ModelKey,
    ModelRepository,
    ModelSpec,
    PayloadFormat,
    RequestHeader,
    TensorSpec,
)
from common.errors import AimlError

SPEC = ModelSpec(
    "m",
    "1",
    Path("m.onnx"),
    (TensorSpec("x", "float32", (-1, 4)),),
    (TensorSpec("y", "float32", (-1, 4)),),
    8,
)
ROW = np.ones((1, 4), np.float32).tobytes()
"""One valid payload (16 bytes)."""


class GatedDouble(Backend):
    """Doubles its input once :attr:`gate` is open (open unless :meth:`hold` was called)."""

    def __init__(self) -> None:
        self.gate: asyncio.Event | None = None
        self._held = False
        self.calls = 0

    def hold(self) -> None:
        self._held = True
        if self.gate is not None:
            self.gate.clear()

    def release(self) -> None:
        self._held = False
        if self.gate is not None:
            self.gate.set()

    async def load(self, model: ModelSpec) -> None: ...

    async def unload(self, key: ModelKey) -> None: ...

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        if self.gate is None:
            self.gate = asyncio.Event()
            if not self._held:
                self.gate.set()
        await self.gate.wait()
        self.calls += 1
        return {"y": inputs["x"] * 2}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None: ...


@dataclass
class RecordingSink:
    """Every answer a session core sent, in order."""

    results: list[str] = field(default_factory=list)
    errors: list[tuple[str, AimlError]] = field(default_factory=list)
    credits: list[tuple[int, int]] = field(default_factory=list)

    def result(self, request_id: str, result: InferenceResult, spec: ModelSpec) -> None:
        self.results.append(request_id)

    def error(self, request_id: str, error: AimlError) -> None:
        self.errors.append((request_id, error))

    def credit(self, nbytes: int, requests: int) -> None:
        self.credits.append((nbytes, requests))

    def answers(self, request_id: str) -> int:
        """Results and errors sent for ``request_id``."""
        return self.results.count(request_id) + sum(r == request_id for r, _ in self.errors)


async def session_plane() -> tuple[DataPlane, GatedDouble]:
    """A started data plane over :class:`GatedDouble` serving :data:`SPEC`."""
    backend = GatedDouble()
    dp = DataPlane(
        ModelRepository([SPEC]), backend, DynamicBatching(BatcherConfig(max_batch_size=8))
    )
    await dp.start()
    return dp, backend


def header(rid: str, total: int = len(ROW)) -> RequestHeader:
    """A header of one ``[1, 4]`` float32 row for model ``m``."""
    return RequestHeader(rid, "m", "", "", PayloadFormat("float32", (1, 4), (1,)), total)


__all__ = ["ROW", "SPEC", "GatedDouble", "RecordingSink", "header", "session_plane"]
