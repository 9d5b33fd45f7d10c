"""Per model version inference statistics in Triton's terms (``ModelStatistics``).

The numbers perf_analyzer and ``tritonclient``'s ``get_inference_statistics`` read: per request
success and fail (count and total nanoseconds from arrival to answer), queue, compute_input
(stacking the batch's inputs), compute_infer (the backend) and compute_output (slicing the
request's rows out of the batch's outputs), cache hits; per batch size the compute times of the
executions of that size. Front doors report each finished request with :meth:`finished`; the data
plane reports each executed batch with :meth:`batch`. Both REST (``/v2/models/stats``) and gRPC
(``ModelStatistics``) answer from the same object.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cloud.core._types import InferenceResult, ModelKey


@dataclass(slots=True)
class Duration:
    """How many times something happened and the nanoseconds it took in all."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass(slots=True)
class BatchStatistics:
    """Executions of one batch size."""

    batch_size: int
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class ModelStatistics:
    """Statistics of one model version since the gateway started."""

    key: ModelKey
    last_inference_ms: int = 0
    """Epoch milliseconds of the last successful request (0: none yet)."""
    inference_count: int = 0
    """Samples answered successfully (a request of batch 4 counts 4; cache hits included)."""
    execution_count: int = 0
    """Batches the backend ran."""
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    cache_hit: Duration = field(default_factory=Duration)
    cache_miss: Duration = field(default_factory=Duration)
    """Requests the result cache looked up and did not answer (count only)."""
    batches: dict[int, BatchStatistics] = field(default_factory=dict)
    """Per batch size, ascending when read through :attr:`batch_stats`."""

    @property
    def batch_stats(self) -> list[BatchStatistics]:
        return [self.batches[size] for size in sorted(self.batches)]


class InferenceStatistics:
    """The statistics of every model version this gateway served (kept after an unload, as
    Triton keeps them until the model is loaded again)."""

    def __init__(self) -> None:
        self._models: dict[ModelKey, ModelStatistics] = {}

    def _of(self, key: ModelKey) -> ModelStatistics:
        stats = self._models.get(key)
        if stats is None:
            stats = self._models[key] = ModelStatistics(key)
        return stats

    def get(self, key: ModelKey) -> ModelStatistics:
        """The statistics of ``key`` (zeros when it has none yet)."""
        return self._models.get(key) or ModelStatistics(key)

    def batch(
        self, key: ModelKey, rows: int, compute_s: float, input_s: float, output_s: float
    ) -> None:
        """One batch of ``rows`` samples ran (its stacking, backend and slicing times)."""
        stats = self._of(key)
        stats.execution_count += 1
        size = stats.batches.get(rows)
        if size is None:
            size = stats.batches[rows] = BatchStatistics(rows)
        size.compute_input.add(input_s)
        size.compute_infer.add(compute_s)
        size.compute_output.add(output_s)

    def finished(self, result: InferenceResult, started_ns: int) -> None:
        """A request answered with ``result``; ``started_ns`` is ``time.monotonic_ns()`` at its
        arrival."""
        stats = self._of(ModelKey(result.model_name, result.model_version))
        elapsed = (time.monotonic_ns() - started_ns) / 1e9
        stats.success.add(elapsed)
        first = next(iter(result.outputs.values()), None)
        stats.inference_count += int(first.shape[0]) if first is not None and first.ndim else 1
        stats.last_inference_ms = time.time_ns() // 1_000_000
        if result.cached:
            stats.cache_hit.add(elapsed)
            return
        stats.queue.add(result.queue_s)
        stats.compute_input.add(result.compute_input_s)
        stats.compute_infer.add(result.compute_s)
        stats.compute_output.add(result.compute_output_s)

    def cache_missed(self, key: ModelKey) -> None:
        """The result cache did not answer a request of ``key`` (a count: the lookup's own time
        is not measured)."""
        self._of(key).cache_miss.add(0.0)

    def failed(self, key: ModelKey, started_ns: int) -> None:
        """A request for served model version ``key`` failed (the caller leaves out names that
        are not served, so a client cannot grow this table)."""
        self._of(key).fail.add((time.monotonic_ns() - started_ns) / 1e9)


__all__ = [
    "BatchStatistics",
    "Duration",
    "InferenceStatistics",
    "ModelStatistics",
]
