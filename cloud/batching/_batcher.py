"""Dynamic batcher for one model version: fair between devices, earliest deadline first within
each, bounded, deadline-aware.

Each device (the ``flow`` a request is submitted under: its certificate's device id) has its own
queue, a heap ordered by (deadline, -priority, arrival). Batches take the devices' requests in
turn by start-time fair queueing over samples: the next request comes from the device that has had
the fewest samples computed since it last had none queued (a device that was idle starts at the
current virtual time, so idleness earns no credit). A device flooding urgent, high-priority
requests therefore gets its share of every batch, not the whole of it; deadlines and priorities
order only that device's own requests. The queue holds ``max_queue_size`` requests; once full, a
device may still queue up to its share (``max_queue_size`` / devices with queued requests), so a
flooder that filled it cannot lock the others out (at most about twice ``max_queue_size`` wait).

A worker takes requests up to ``max_batch_size`` samples, answers those that can no longer meet
their deadline with DEADLINE_EXCEEDED before computing, concatenates the rest along the batch
dimension, runs the backend once and hands each request exactly its rows back. Batching never
changes results: each sample's rows are computed by the same model independently of its
neighbours. The one exception is opt-in per model (``width_bucket``, for recognisers that read
right-padded crops the way their own batching pads them): requests whose last input dimension
falls in the same bucket batch together, right-padded with zeros to the batch's widest, and get
the answer to their padded input.

With more than one worker (``workers``, the batches computing at once), a device may occupy all
workers but one while other devices use the model: a light device's request then finds a worker
free instead of waiting for a flooder's batch to finish; a device alone uses all of them.

Workers are supervised: a fault in one batch fails that batch's requests (INTERNAL) and nothing
else; a worker that crashes anyway is logged, restarted after ``restart_delay_s`` (doubling while
it keeps crashing, up to 1 s) and the batcher reports not :attr:`DynamicBatcher.ready` until every
worker runs again.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from cloud.core import BatchObserver, InferenceResult, ModelKey, ModelSpec, RunFn
from common.aio import cancel_and_wait
from common.errors import AimlError, DeadlineExceeded, Internal, ResourceExhausted, Unavailable

log = logging.getLogger(__name__)

CONTENTION_WINDOW_S = 1.0
"""Devices that submitted within this long count as sharing the model (``contended_batch_s``)."""


@dataclass(slots=True)
class BatcherConfig:
    """Limits of one batcher."""

    max_batch_size: int = 64
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 1024
    workers: int = 1
    restart_delay_s: float = 0.05
    """Pause before a crashed worker restarts (doubles per consecutive crash, at most 1 s)."""
    contended_batch_s: float | None = 0.005
    """While more than one device uses the model (submitted within the last second), a batch is
    cut once its estimated compute reaches this (at least one request), so a light device waits
    for short batches, not for a flooder's full ones; None: always fill up to
    ``max_batch_size``."""
    width_bucket: int = 0
    """Requests whose last input dimension lies in the same bucket of this width batch together,
    right-padded with zeros (0: only equal shapes batch)."""


@dataclass(slots=True)
class _Item:
    inputs: Mapping[str, np.ndarray] | None
    rows: int
    outputs: tuple[str, ...]
    deadline: float
    future: asyncio.Future[InferenceResult]
    enqueued: float
    flow: _Flow
    queued: bool = True


_Entry = tuple[float, int, int, _Item]
"""(deadline, -priority, arrival sequence, item): a device's queue order."""


@dataclass(slots=True, eq=False)
class _Flow:
    """One device's queue and its place in the fair order."""

    name: str
    heap: list[_Entry] = field(default_factory=list)
    queued: int = 0
    """Requests of this device waiting (the heap also holds withdrawn ones until reached)."""
    start: float = 0.0
    """Virtual time (samples) at which its next request is due."""
    scheduled: bool = False
    """In the batcher's ready heap."""


class DynamicBatcher:
    """Batches requests for one model version and runs them through ``run``."""

    def __init__(
        self,
        key: ModelKey,
        run: RunFn,
        config: BatcherConfig,
        observer: BatchObserver | None = None,
    ) -> None:
        self.key = key
        self._run = run
        self._cfg = config
        self._observer = observer
        self._flows: dict[str, _Flow] = {}
        self._ready: list[tuple[float, int, _Flow]] = []  # flows with entries, by start
        self._vtime = 0.0  # the start of the last request taken into a batch
        self._backlogged = 0  # flows with queued requests
        self._seen: dict[str, float] = {}  # flow -> last submit, pruned every CONTENTION_WINDOW_S
        self._pruned = 0.0
        self._seq = itertools.count()
        self._queued = 0
        self._rows = 0
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._down = 0  # workers crashed and not yet restarted
        self._computing: dict[str, int] = {}  # flow -> batches of it computing now
        self.restarts = 0
        """Worker restarts after a crash, over the batcher's life."""
        self._compute_estimate_s = 0.0  # EWMA of batch compute time; 0 until measured
        self._row_estimate_s = 0.0  # EWMA of compute time per sample; 0 until measured
        self.batches = 0
        self.samples = 0
        self.input_elements = 0
        """Input elements the requests brought (over all batches)."""
        self.computed_elements = 0
        """Input elements computed (with padding: at least ``input_elements``)."""

    def start(self) -> None:
        """Start the worker tasks (inside the running loop)."""
        self._wakeup = asyncio.Event()
        for i in range(self._cfg.workers):
            self._workers.append(
                asyncio.get_running_loop().create_task(
                    self._supervise(), name=f"batcher-{self.key}-{i}"
                )
            )

    @property
    def ready(self) -> bool:
        """True while started, not closed and every worker is running."""
        return self._wakeup is not None and not self._closed and self._down == 0

    @property
    def queued(self) -> int:
        """Requests waiting (not yet taken into a batch)."""
        return self._queued

    def queued_by(self, flow: str) -> int:
        """Requests of ``flow`` waiting."""
        f = self._flows.get(flow)
        return 0 if f is None else f.queued

    def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        outputs: tuple[str, ...] = (),
        deadline: float | None = None,
        priority: int = 2,
        flow: str = "",
    ) -> asyncio.Future[InferenceResult]:
        """Queue one request of ``rows`` samples for ``flow`` (the device it came from); the
        future resolves to its result.

        Raises ResourceExhausted when the queue is full and ``flow`` holds its share of it,
        DeadlineExceeded when the deadline has already passed, Unavailable after close.
        Cancelling the future frees the queued inputs.
        """
        if self._closed or self._wakeup is None:
            raise Unavailable(f"model {self.key} is not serving")
        now = time.monotonic()
        dl = math.inf if deadline is None else deadline
        if dl <= now:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        self._seen[flow] = now
        f = self._flows.get(flow)
        if self._queued >= self._cfg.max_queue_size:
            held = 0 if f is None else f.queued
            share = self._cfg.max_queue_size // (self._backlogged + (0 if held else 1))
            if held >= share:
                raise ResourceExhausted(
                    f"queue of model {self.key} is full ({self._cfg.max_queue_size} requests) and "
                    f"{_who(flow)} holds {held}, its share; retry later"
                )
        if f is None:
            f = self._flows[flow] = _Flow(flow)
        fut: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
        item = _Item(inputs, rows, outputs, dl, fut, now, f)
        fut.add_done_callback(lambda d, it=item: self._on_done(d, it))  # type: ignore[misc]
        heapq.heappush(f.heap, (dl, -priority, next(self._seq), item))
        if f.queued == 0:
            self._backlogged += 1
        f.queued += 1
        if not f.scheduled:  # an idle device starts now: idleness earns no credit
            f.start = max(f.start, self._vtime)
            f.scheduled = True
            heapq.heappush(self._ready, (f.start, next(self._seq), f))
        self._queued += 1
        self._rows += rows
        self._wakeup.set()
        return fut

    def withdraw(self, fut: asyncio.Future[InferenceResult]) -> bool:
        """Cancel ``fut`` only while its request is still queued (not yet taken into a batch);
        True when withdrawn. A request already computing is left to finish."""
        for item in self._items():
            if item.future is fut and item.queued:
                fut.cancel()
                return True
        return False

    def _items(self) -> list[_Item]:
        return [e[3] for f in self._flows.values() for e in f.heap]

    def _dequeue(self, item: _Item) -> None:
        item.queued = False
        self._queued -= 1
        self._rows -= item.rows
        item.flow.queued -= 1
        if item.flow.queued == 0:
            self._backlogged -= 1

    def _on_done(self, fut: asyncio.Future[InferenceResult], item: _Item) -> None:
        if fut.cancelled() and item.queued:
            # Still queued: free the payload now; the heap entry is skipped when reached.
            self._dequeue(item)
            item.inputs = None

    def _head(self, f: _Flow) -> _Item | None:
        """The next queued request of ``f`` (withdrawn ones dropped), or None."""
        while f.heap:
            item = f.heap[0][3]
            if item.queued:
                return item
            heapq.heappop(f.heap)
        return None

    def _contended(self, now: float) -> bool:
        """More than one device has used the model lately."""
        if now - self._pruned > CONTENTION_WINDOW_S:
            self._seen = {f: t for f, t in self._seen.items() if now - t <= CONTENTION_WINDOW_S}
            self._pruned = now
        return len(self._seen) > 1 or self._backlogged > 1

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        now = time.monotonic()
        estimate = self._compute_estimate_s
        limit = self._cfg.max_batch_size
        cut = self._cfg.contended_batch_s
        contended = self._contended(now)
        if cut is not None and self._row_estimate_s > 0 and contended:
            limit = max(1, min(limit, int(cut / self._row_estimate_s)))
        # While devices share the model, one device's batches may occupy all workers but one,
        # so another device's request finds a worker free instead of waiting for a batch.
        occupy = self._cfg.workers - 1 if contended and self._cfg.workers > 1 else math.inf
        skipped: list[tuple[float, int, _Flow]] = []
        while self._ready:
            entry = self._ready[0]
            f = entry[2]
            item = self._head(f)
            if item is None:  # nothing left of this device: it leaves the fair order
                heapq.heappop(self._ready)
                f.scheduled = False
                if f.queued == 0 and self._flows.get(f.name) is f:
                    del self._flows[f.name]
                continue
            if rows and rows + item.rows > limit:
                break
            if self._computing.get(f.name, 0) >= occupy:
                skipped.append(heapq.heappop(self._ready))  # its next batch waits for a worker
                continue
            if batch and not _stackable(batch[0], item, self._cfg.width_bucket):
                # Another shape along a dynamic dimension: this device's request leads a later
                # batch; the others may still fill this one.
                skipped.append(heapq.heappop(self._ready))
                continue
            heapq.heappop(self._ready)
            heapq.heappop(f.heap)
            self._dequeue(item)
            self._vtime = entry[0]
            f.start = entry[0] + item.rows
            heapq.heappush(self._ready, (f.start, next(self._seq), f))
            if item.deadline < now + estimate:
                item.inputs = None
                item.future.set_exception(
                    DeadlineExceeded(
                        f"deadline cannot be met: {max(0.0, item.deadline - now) * 1e3:.1f} ms left, "
                        f"model {self.key} needs about {estimate * 1e3:.1f} ms"
                    )
                )
                continue
            batch.append(item)
            rows += item.rows
        for entry in skipped:
            heapq.heappush(self._ready, entry)
        return batch

    async def _supervise(self) -> None:
        delay = self._cfg.restart_delay_s
        while not self._closed:
            taken: list[_Item] = []
            try:
                await self._work(taken)
                return
            except asyncio.CancelledError:  # closed while computing: nobody will answer these
                _fail(taken, Unavailable(f"model {self.key} is shutting down"))
                raise
            except Exception:
                log.exception("batch worker of %s crashed; restarting it", self.key)
            self._down += 1
            self.restarts += 1
            _fail(taken, Internal(f"model {self.key}: its batch worker failed; retry"))
            del taken
            try:
                await asyncio.sleep(delay)
            finally:
                self._down -= 1
            delay = min(1.0, delay * 2)
            if self._wakeup is not None:
                self._wakeup.set()  # requests may have queued meanwhile

    async def _work(self, taken: list[_Item]) -> None:
        """Take and run batches until closed; ``taken`` holds the batch in hand (for the
        supervisor to fail if this raises)."""
        assert self._wakeup is not None
        wakeup = self._wakeup
        while not self._closed:
            await wakeup.wait()
            if self._cfg.max_queue_delay_s > 0 and self._rows < self._cfg.max_batch_size:
                await self._wait_for_fill()
            taken[:] = self._take()
            if not self._queued or not taken:
                # Nothing queued, or nothing this worker may take now (every queued device
                # occupies its workers): wait for a submit or for a batch to end.
                wakeup.clear()
            if taken:
                flows = {i.flow.name for i in taken}
                for name in flows:
                    self._computing[name] = self._computing.get(name, 0) + 1
                try:
                    await self._execute(taken)
                finally:
                    for name in flows:
                        if (left := self._computing[name] - 1) > 0:
                            self._computing[name] = left
                        else:
                            del self._computing[name]
                    if self._queued:
                        wakeup.set()  # a device's worker is free again: its queue may go on
            taken.clear()

    async def _wait_for_fill(self) -> None:
        # Wait until the oldest request has waited max_queue_delay or the batch is full.
        oldest = min((i.enqueued for i in self._items() if i.queued), default=None)
        if oldest is None:
            return
        until = oldest + self._cfg.max_queue_delay_s
        while self._rows < self._cfg.max_batch_size:
            left = until - time.monotonic()
            if left <= 0:
                return
            assert self._wakeup is not None
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), left)
            except TimeoutError:
                return
            finally:
                self._wakeup.set()

    async def _execute(self, batch: list[_Item]) -> None:
        rows = sum(i.rows for i in batch)
        stacking = time.monotonic()
        given = sum(a.size for i in batch for a in (i.inputs or {}).values())
        if len(batch) == 1:
            feeds = batch[0].inputs
            assert feeds is not None
        else:
            names = list(batch[0].inputs or {})
            feeds = {n: _stack([i.inputs[n] for i in batch if i.inputs]) for n in names}
        self.input_elements += given
        self.computed_elements += sum(a.size for a in feeds.values())
        start = time.monotonic()
        try:
            outputs = await self._run(feeds)
        except AimlError as exc:
            for item in batch:
                item.inputs = None
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except Exception as exc:
            log.exception("batch of %s failed", self.key)
            for item in batch:
                item.inputs = None
                if not item.future.done():
                    item.future.set_exception(Internal(f"model {self.key} failed: {exc}"))
            return
        end = time.monotonic()
        compute = end - start
        est = self._compute_estimate_s
        self._compute_estimate_s = compute if est == 0 else 0.8 * est + 0.2 * compute
        per_row, est = compute / rows, self._row_estimate_s
        self._row_estimate_s = per_row if est == 0 else 0.8 * est + 0.2 * per_row
        self.batches += 1
        self.samples += rows
        input_s = start - stacking
        offset = 0
        for item in batch:
            item.inputs = None
            if not item.future.done():
                wanted = item.outputs or tuple(outputs)
                missing = [n for n in wanted if n not in outputs]
                if missing:  # validated at submit; a backend that breaks its spec fails only these
                    item.future.set_exception(
                        Internal(f"model {self.key} returned no output(s) {missing}")
                    )
                    offset += item.rows
                    continue
                slicing = time.monotonic()
                if len(batch) == 1:
                    mine = {n: outputs[n] for n in wanted}
                else:
                    mine = {n: outputs[n][offset : offset + item.rows] for n in wanted}
                item.future.set_result(
                    InferenceResult(
                        self.key.name,
                        self.key.version,
                        mine,
                        queue_s=start - item.enqueued,
                        compute_s=compute,
                        batch_size=rows,
                        compute_input_s=input_s,
                        compute_output_s=time.monotonic() - slicing,
                    )
                )
            offset += item.rows
        if self._observer is not None:
            self._observer(self.key, rows, compute, input_s, time.monotonic() - end)

    async def close(self) -> None:
        """Stop the workers; queued requests fail with UNAVAILABLE."""
        self._closed = True
        await cancel_and_wait(*self._workers)
        for item in self._items():
            if item.queued and not item.future.done():
                item.queued = False
                item.inputs = None
                item.future.set_exception(Unavailable(f"model {self.key} is shutting down"))
        self._flows.clear()
        self._ready.clear()
        self._queued = self._rows = self._backlogged = 0


def _fail(items: list[_Item], error: Exception) -> None:
    for item in items:
        item.inputs = None
        if not item.future.done():
            item.future.set_exception(error)
    items.clear()


def _who(flow: str) -> str:
    return f"device {flow!r}" if flow else "the unidentified clients"


def _stackable(first: _Item, item: _Item, width_bucket: int = 0) -> bool:
    """True when ``item``'s inputs concatenate onto ``first``'s along the batch dimension (same
    names, same sizes in every other dimension: models may leave those dynamic), or, with a
    ``width_bucket``, when only their last dimensions differ, within the same bucket."""
    a, b = first.inputs, item.inputs
    if a is None or b is None or a.keys() != b.keys():
        return False
    if not width_bucket:
        return all(a[n].shape[1:] == b[n].shape[1:] for n in a)
    return all(
        a[n].ndim == b[n].ndim >= 2
        and a[n].shape[1:-1] == b[n].shape[1:-1]
        and -(-a[n].shape[-1] // width_bucket) == -(-b[n].shape[-1] // width_bucket)
        for n in a
    )


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """``arrays`` along the batch dimension, right-padded with zeros to the widest last
    dimension when they differ there (``width_bucket``)."""
    widest = max(a.shape[-1] for a in arrays)
    if all(a.shape[-1] == widest for a in arrays):
        return np.concatenate(arrays)
    out = np.zeros((sum(len(a) for a in arrays), *arrays[0].shape[1:-1], widest), arrays[0].dtype)
    row = 0
    for a in arrays:
        out[row : row + len(a), ..., : a.shape[-1]] = a
        row += len(a)
    return out


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    """The data plane's batcher factory: one :class:`DynamicBatcher` per model version, its
    batches capped by the model's own ``max_batch_size``."""

    config: BatcherConfig = field(default_factory=BatcherConfig)

    def __call__(self, spec: ModelSpec, run: RunFn, observer: BatchObserver) -> DynamicBatcher:
        cfg = self.config
        capped = BatcherConfig(
            max_batch_size=min(cfg.max_batch_size, spec.max_batch_size),
            max_queue_delay_s=(
                cfg.max_queue_delay_s if spec.max_queue_delay_s is None else spec.max_queue_delay_s
            ),
            max_queue_size=cfg.max_queue_size,
            workers=cfg.workers,
            restart_delay_s=cfg.restart_delay_s,
            contended_batch_s=cfg.contended_batch_s,
            width_bucket=spec.width_bucket,
        )
        return DynamicBatcher(spec.key, run, capped, observer)


__all__ = ["BatcherConfig", "DynamicBatcher", "DynamicBatching"]
