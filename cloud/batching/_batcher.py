"""Dynamic batcher for one model version: earliest deadline first, bounded, deadline-aware.

Requests wait in a heap ordered by (deadline, -priority, arrival). A worker takes the most urgent
requests up to ``max_batch_size`` samples, answers those that can no longer meet their deadline
with DEADLINE_EXCEEDED before computing, concatenates the rest along the batch dimension, runs the
backend once and hands each request exactly its rows back. Batching never changes results: each
sample's rows are computed by the same model independently of its neighbours.

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


@dataclass(slots=True)
class BatcherConfig:
    """Limits of one batcher."""

    max_batch_size: int = 64
    max_queue_delay_s: float = 0.0
    max_queue_size: int = 1024
    workers: int = 1
    restart_delay_s: float = 0.05
    """Pause before a crashed worker restarts (doubles per consecutive crash, at most 1 s)."""


@dataclass(slots=True)
class _Item:
    inputs: Mapping[str, np.ndarray] | None
    rows: int
    outputs: tuple[str, ...]
    deadline: float
    future: asyncio.Future[InferenceResult]
    enqueued: float
    queued: bool = True


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
        self._heap: list[tuple[float, int, int, _Item]] = []
        self._seq = itertools.count()
        self._queued = 0
        self._rows = 0
        self._wakeup: asyncio.Event | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        self._down = 0  # workers crashed and not yet restarted
        self.restarts = 0
        """Worker restarts after a crash, over the batcher's life."""
        self._compute_estimate_s = 0.0  # EWMA of batch compute time; 0 until measured
        self.batches = 0
        self.samples = 0

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

    def submit(
        self,
        inputs: Mapping[str, np.ndarray],
        rows: int,
        outputs: tuple[str, ...] = (),
        deadline: float | None = None,
        priority: int = 2,
    ) -> asyncio.Future[InferenceResult]:
        """Queue one request of ``rows`` samples; the future resolves to its result.

        Raises ResourceExhausted when the queue is full, DeadlineExceeded when the deadline has
        already passed, Unavailable after close. Cancelling the future frees the queued inputs.
        """
        if self._closed or self._wakeup is None:
            raise Unavailable(f"model {self.key} is not serving")
        now = time.monotonic()
        dl = math.inf if deadline is None else deadline
        if dl <= now:
            raise DeadlineExceeded("the request's deadline passed before it was queued")
        if self._queued >= self._cfg.max_queue_size:
            raise ResourceExhausted(
                f"queue of model {self.key} is full ({self._cfg.max_queue_size} requests); retry later"
            )
        fut: asyncio.Future[InferenceResult] = asyncio.get_running_loop().create_future()
        item = _Item(inputs, rows, outputs, dl, fut, now)
        fut.add_done_callback(lambda f, it=item: self._on_done(f, it))  # type: ignore[misc]
        heapq.heappush(self._heap, (dl, -priority, next(self._seq), item))
        self._queued += 1
        self._rows += rows
        self._wakeup.set()
        return fut

    def withdraw(self, fut: asyncio.Future[InferenceResult]) -> bool:
        """Cancel ``fut`` only while its request is still queued (not yet taken into a batch);
        True when withdrawn. A request already computing is left to finish."""
        for _, _, _, item in self._heap:
            if item.future is fut and item.queued:
                fut.cancel()
                return True
        return False

    def _on_done(self, fut: asyncio.Future[InferenceResult], item: _Item) -> None:
        if fut.cancelled() and item.queued:
            # Still queued: free the payload now; the heap entry is skipped when reached.
            item.queued = False
            item.inputs = None
            self._queued -= 1
            self._rows -= item.rows

    def _take(self) -> list[_Item]:
        batch: list[_Item] = []
        rows = 0
        now = time.monotonic()
        estimate = self._compute_estimate_s
        while self._heap:
            item = self._heap[0][3]
            if not item.queued:  # cancelled while queued
                heapq.heappop(self._heap)
                continue
            if rows and rows + item.rows > self._cfg.max_batch_size:
                break
            if batch and not _stackable(batch[0], item):
                break  # another shape along a dynamic dimension: it leads the next batch
            heapq.heappop(self._heap)
            item.queued = False
            self._queued -= 1
            self._rows -= item.rows
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
            if not self._heap:
                wakeup.clear()
            if taken:
                await self._execute(taken)
            taken.clear()

    async def _wait_for_fill(self) -> None:
        # Wait until the oldest request has waited max_queue_delay or the batch is full.
        oldest = min((e[3].enqueued for e in self._heap if e[3].queued), default=None)
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
        if len(batch) == 1:
            feeds = batch[0].inputs
            assert feeds is not None
        else:
            names = list(batch[0].inputs or {})
            feeds = {n: np.concatenate([i.inputs[n] for i in batch if i.inputs]) for n in names}
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
        self.batches += 1
        self.samples += rows
        if self._observer is not None:
            self._observer(self.key, rows, compute)
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
                    )
                )
            offset += item.rows

    async def close(self) -> None:
        """Stop the workers; queued requests fail with UNAVAILABLE."""
        self._closed = True
        await cancel_and_wait(*self._workers)
        while self._heap:
            item = heapq.heappop(self._heap)[3]
            if item.queued and not item.future.done():
                item.queued = False
                item.inputs = None
                item.future.set_exception(Unavailable(f"model {self.key} is shutting down"))
        self._queued = self._rows = 0


def _fail(items: list[_Item], error: Exception) -> None:
    for item in items:
        item.inputs = None
        if not item.future.done():
            item.future.set_exception(error)
    items.clear()


def _stackable(first: _Item, item: _Item) -> bool:
    """True when ``item``'s inputs concatenate onto ``first``'s along the batch dimension (same
    names, same sizes in every other dimension: models may leave those dynamic)."""
    a, b = first.inputs, item.inputs
    if a is None or b is None or a.keys() != b.keys():
        return False
    return all(a[n].shape[1:] == b[n].shape[1:] for n in a)


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
        )
        return DynamicBatcher(spec.key, run, capped, observer)


__all__ = ["BatcherConfig", "DynamicBatcher", "DynamicBatching"]
