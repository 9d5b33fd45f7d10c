"""DynamicBatcher: EDF order, priorities, deadlines, bounded queue, cancellation, exact results."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import numpy as np
import pytest

from cloud.batching import BatcherConfig, DynamicBatcher
from cloud.core import ModelKey
from common.errors import DeadlineExceeded, ResourceExhausted, Unavailable

KEY = ModelKey("m", "1")


class _Recorder:
    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[float]] = []
        self.delay = delay
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        await self.gate.wait()
        x = feeds["x"]
        self.batches.append(x[:, 0].tolist())
        if self.delay:
            await asyncio.sleep(self.delay)
        return {"y": x * 2.0, "z": x.sum(axis=1, keepdims=True)}


def _x(v: float, rows: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), v, np.float32)}


async def test_batches_concatenate_and_split_exactly() -> None:
    run = _Recorder()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=8, max_queue_delay_s=0.05))
    b.start()
    futs = [b.submit(_x(i, rows=1 + i % 2), 1 + i % 2) for i in range(5)]
    results = await asyncio.gather(*futs)
    assert len(run.batches) == 1 and b.batches == 1 and b.samples == 7
    for i, r in enumerate(results):
        np.testing.assert_array_equal(r.outputs["y"], _x(i, 1 + i % 2)["x"] * 2)
        assert r.batch_size == 7
    only_z = await b.submit(_x(7), 1, outputs=("z",))
    assert set(only_z.outputs) == {"z"}
    await b.close()


async def test_earliest_deadline_first_then_priority() -> None:
    run = _Recorder()
    run.gate.clear()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=1))
    b.start()
    blocker = b.submit(_x(-1), 1)
    await asyncio.sleep(0.01)  # the worker holds the first request at the gate
    now = time.monotonic()
    futs = [
        b.submit(_x(3), 1, deadline=now + 30),
        b.submit(_x(1), 1, deadline=now + 10),
        b.submit(_x(4), 1),  # no deadline: after every deadline
        b.submit(_x(2), 1, deadline=now + 10, priority=3),  # same deadline, higher priority
    ]
    run.gate.set()
    await asyncio.gather(blocker, *futs)
    assert [v[0] for v in run.batches] == [-1, 2, 1, 3, 4]
    await b.close()


async def test_full_queue_and_expired_deadlines_are_refused_before_compute() -> None:
    run = _Recorder()
    run.gate.clear()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=1, max_queue_size=2))
    b.start()
    first = b.submit(_x(0), 1)
    await asyncio.sleep(0.01)
    late = b.submit(_x(1), 1, deadline=time.monotonic() + 0.02)
    b.submit(_x(2), 1)
    with pytest.raises(ResourceExhausted, match="queue"):
        b.submit(_x(3), 1)
    with pytest.raises(DeadlineExceeded):
        b.submit(_x(4), 1, deadline=time.monotonic() - 1)
    await asyncio.sleep(0.05)  # `late` can no longer make it
    run.gate.set()
    await first
    with pytest.raises(DeadlineExceeded, match="deadline cannot be met"):
        await late
    assert 1.0 not in [v[0] for v in run.batches]  # never computed
    await b.close()


async def test_cancel_frees_queued_work_and_close_fails_the_rest() -> None:
    run = _Recorder()
    run.gate.clear()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=1))
    b.start()
    b.submit(_x(0), 1)
    await asyncio.sleep(0.01)
    cancelled = b.submit(_x(1), 1)
    kept = b.submit(_x(2), 1)
    assert b.queued == 2
    cancelled.cancel()
    await asyncio.sleep(0)
    assert b.queued == 1
    await b.close()
    with pytest.raises(Unavailable):
        await kept
    with pytest.raises(Unavailable):
        b.submit(_x(3), 1)


async def test_backend_errors_reach_every_request_of_the_batch() -> None:
    async def boom(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise Unavailable("engine down")

    b = DynamicBatcher(KEY, boom, BatcherConfig(max_batch_size=4, max_queue_delay_s=0.02))
    b.start()
    futs = [b.submit(_x(i), 1) for i in range(3)]
    for f in futs:
        with pytest.raises(Unavailable, match="engine down"):
            await f
    await b.close()


async def test_requests_of_other_shapes_go_in_separate_batches() -> None:
    # A model with a dynamic non-batch dimension: inputs of different widths cannot be stacked.
    seen: list[tuple[int, ...]] = []

    async def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.append(feeds["x"].shape)
        return {"y": feeds["x"].sum(axis=1, keepdims=True)}

    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=8, max_queue_delay_s=0.05))
    b.start()
    widths = [3, 3, 5, 3, 5]
    futs = [b.submit({"x": np.ones((1, w), np.float32)}, 1) for w in widths]
    results = await asyncio.wait_for(asyncio.gather(*futs), 5)
    assert [float(r.outputs["y"][0, 0]) for r in results] == [float(w) for w in widths]
    # Arrival order is kept; a batch ends where the width changes.
    assert seen == [(2, 3), (1, 5), (1, 3), (1, 5)]
    await b.close()
