"""DynamicBatcher: EDF order, priorities, deadlines, bounded queue, cancellation, exact results."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
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


async def test_a_flooding_device_shares_every_batch_with_the_others() -> None:
    # The flooder's requests are all more urgent (deadline, priority) than the other device's;
    # deadlines order only a device's own requests, batches take the devices in turn.
    run = _Recorder()
    run.gate.clear()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=4, contended_batch_s=None))
    b.start()
    blocker = b.submit(_x(-1), 1, flow="flooder")
    await asyncio.sleep(0.01)
    soon = time.monotonic() + 30
    flood = [b.submit(_x(100 + i), 1, deadline=soon, priority=3, flow="flooder") for i in range(12)]
    mine = [b.submit(_x(i), 1, flow="device") for i in range(2)]
    run.gate.set()
    await asyncio.gather(blocker, *flood, *mine)
    second = run.batches[1]
    assert sorted(v for v in second if v < 100) == [0.0, 1.0], run.batches
    assert [v for v in second if v >= 100] == [100.0, 101.0]  # the flooder's own EDF order
    await b.close()


async def test_an_idle_device_earns_no_credit() -> None:
    # A device that was away does not get a run of batches to catch up: it starts at the
    # current virtual time and alternates with the device that kept the model busy.
    run = _Recorder()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=1, contended_batch_s=None))
    b.start()
    await b.submit(_x(50), 1, flow="returning")
    await asyncio.gather(*(b.submit(_x(100 + i), 1, flow="busy") for i in range(20)))
    run.gate.clear()
    blocker = b.submit(_x(-1), 1, flow="busy")
    await asyncio.sleep(0.01)
    busy = [b.submit(_x(200 + i), 1, flow="busy") for i in range(4)]
    back = [b.submit(_x(i), 1, flow="returning") for i in range(4)]
    run.gate.set()
    await asyncio.gather(blocker, *busy, *back)
    order = [v[0] for v in run.batches[22:]]
    assert order == [200.0, 0.0, 201.0, 1.0, 202.0, 2.0, 203.0, 3.0], order
    await b.close()


async def test_a_device_that_filled_the_queue_cannot_lock_the_others_out() -> None:
    run = _Recorder()
    run.gate.clear()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=1, max_queue_size=4))
    b.start()
    blocker = b.submit(_x(-1), 1, flow="flooder")
    await asyncio.sleep(0.01)
    flood = [b.submit(_x(1), 1, flow="flooder") for _ in range(4)]
    with pytest.raises(ResourceExhausted, match="'flooder' holds 4, its share"):
        b.submit(_x(1), 1, flow="flooder")
    # The queue is full, but the other device holds less than its share (4 / 2 devices).
    mine = [b.submit(_x(2), 1, flow="device") for _ in range(2)]
    with pytest.raises(ResourceExhausted, match="'device' holds 2, its share"):
        b.submit(_x(2), 1, flow="device")
    assert b.queued == 6 and b.queued_by("device") == 2 and b.queued_by("flooder") == 4
    run.gate.set()
    await asyncio.gather(blocker, *flood, *mine)
    assert b.queued == 0 and b.queued_by("flooder") == 0
    await b.close()


async def test_batches_are_cut_short_while_devices_share_the_model() -> None:
    # 1 ms of compute per sample: a 4 ms contended batch holds at most 4 samples, a device
    # alone still gets full batches.
    async def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        await gate.wait()
        sizes.append(len(feeds["x"]))
        await asyncio.sleep(0.001 * len(feeds["x"]))
        return {"y": feeds["x"]}

    gate, sizes = asyncio.Event(), list[int]()
    gate.set()
    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=16, contended_batch_s=0.004))
    b.start()
    await b.submit(_x(0, rows=2), 2, flow="alone")  # measures the compute per sample
    gate.clear()
    blocker = b.submit(_x(0), 1, flow="alone")
    await asyncio.sleep(0.01)
    alone = [b.submit(_x(i), 1, flow="alone") for i in range(16)]
    gate.set()
    await asyncio.gather(blocker, *alone)
    assert sizes[1:] == [1, 16]
    sizes.clear()
    gate.clear()
    blocker = b.submit(_x(0), 1, flow="alone")
    await asyncio.sleep(0.01)
    shared = [b.submit(_x(i), 1, flow=f"d{i % 2}") for i in range(16)]
    gate.set()
    await asyncio.gather(blocker, *shared)
    assert sum(sizes) == 17 and max(sizes[1:]) <= 4, sizes
    await b.close()


async def test_a_flooding_device_leaves_one_worker_to_the_others() -> None:
    # Two workers; the flooder's batches hold their worker until the test releases them.
    released: defaultdict[float, asyncio.Event] = defaultdict(asyncio.Event)
    computed: list[float] = []

    async def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        v = float(feeds["x"][0, 0])
        computed.append(v)
        if v < 100:
            await released[v].wait()
        return {"y": feeds["x"]}

    b = DynamicBatcher(KEY, run, BatcherConfig(max_batch_size=1, workers=2, contended_batch_s=None))
    b.start()
    flood = [b.submit(_x(i), 1, flow="flooder") for i in range(6)]
    await asyncio.sleep(0.01)
    assert computed == [0, 1]  # alone, a device uses every worker
    light = b.submit(_x(100), 1, flow="light")
    released[0].set()
    await asyncio.wait_for(light, 1.0)
    await asyncio.sleep(0.01)
    # The flooder still computes request 1; with the light device around it may not take the
    # worker that answered the light device, so the light device's next request finds it free
    # (before: the flooder's request 2 took it, and this one waited for a release).
    assert computed == [0, 1, 100]
    again = b.submit(_x(101), 1, flow="light")
    await asyncio.wait_for(again, 1.0)
    assert computed == [0, 1, 100, 101]
    for i in range(6):
        released[float(i)].set()
    await asyncio.wait_for(asyncio.gather(*flood), 1.0)
    assert sorted(v for v in computed if v < 100) == [0, 1, 2, 3, 4, 5]
    await b.close()
