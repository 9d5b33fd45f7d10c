"""Batched, bounded, non-blocking metadata writes: a slow or down database never blocks inference.

``submit`` only appends to a bounded buffer (dropping and counting when it is full); one owned
task flushes batches to the backend. A failed batch is counted as dropped and the writer backs
off, so a database outage costs metadata, never latency.

The writer is the data plane's metadata sink and telemetry sink (``cloud.core.MetadataSink``,
``cloud.core.TelemetrySink``): calling it queues a record or a device event.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time

from prometheus_client import Counter, Gauge

from cloud.core import TelemetryEvent
from common.aio import cancel_and_wait

from ._metadata_sql import MetadataBackend
from ._records import Record, telemetry_record

log = logging.getLogger(__name__)

METADATA_DROPPED = Counter(
    "aiml021_metadata_records_dropped_total",
    "Metadata records not written, by reason (buffer_full, write_failed, shutdown).",
    ["reason"],
)
METADATA_WRITTEN = Counter("aiml021_metadata_records_written_total", "Metadata records written.")
METADATA_BUFFERED = Gauge(
    "aiml021_metadata_buffer_records", "Metadata records waiting to be written."
)


class MetadataWriter:
    """Owns the buffer and the flush task for one :class:`MetadataBackend`."""

    def __init__(
        self,
        backend: MetadataBackend,
        *,
        max_buffer: int = 10_000,
        max_batch: int = 500,
        flush_interval_s: float = 0.2,
        max_backoff_s: float = 5.0,
        write_timeout_s: float = 10.0,
    ) -> None:
        if max_buffer < 1 or max_batch < 1:
            raise ValueError("max_buffer and max_batch must be >= 1")
        self.backend = backend
        self._max_buffer = max_buffer
        self._max_batch = max_batch
        self._interval = flush_interval_s
        self._max_backoff = max_backoff_s
        self._write_timeout = write_timeout_s
        self._buffer: collections.deque[Record] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._stopping = False
        self._migrated = False
        self.dropped = 0
        self.written = 0
        self.failed_batches = 0

    @property
    def buffered(self) -> int:
        """Records waiting to be written."""
        return len(self._buffer)

    async def start(self, *, migrate: bool = True) -> None:
        """Start the flush task (migrating first; a failing migration is logged and retried)."""
        self._wakeup = asyncio.Event()
        self._task = asyncio.create_task(self._run(migrate), name="metadata-writer")

    def submit(self, record: Record) -> bool:
        """Queue ``record``; never blocks. False (and a counted drop) when the buffer is full."""
        if self._stopping or len(self._buffer) >= self._max_buffer:
            self.dropped += 1
            METADATA_DROPPED.labels("buffer_full").inc()
            return False
        self._buffer.append(record)
        METADATA_BUFFERED.set(len(self._buffer))
        if self._wakeup is not None and len(self._buffer) >= self._max_batch:
            self._wakeup.set()
        return True

    def __call__(self, record: Record | TelemetryEvent, /) -> None:
        """Queue a record, or a device-reported request (events without a request id are not
        recorded); never blocks or raises (see :meth:`submit`)."""
        if isinstance(record, TelemetryEvent):
            if not record.request_id:
                return
            record = telemetry_record(record)
        self.submit(record)

    async def flush(self) -> None:
        """Write everything buffered now (used at shutdown and by tests)."""
        if self._buffer and not self._migrated and not await self._migrate():
            return
        while self._buffer:
            if not await self._write_one_batch():
                break

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Flush what can be flushed within ``timeout_s``, then stop; the rest is dropped."""
        self._stopping = True
        await cancel_and_wait(self._task)
        self._task = None
        try:
            await asyncio.wait_for(self.flush(), timeout_s)
        except TimeoutError:
            pass
        if self._buffer:
            METADATA_DROPPED.labels("shutdown").inc(len(self._buffer))
            self.dropped += len(self._buffer)
            self._buffer.clear()
        METADATA_BUFFERED.set(0)

    async def _write_one_batch(self) -> bool:
        n = min(self._max_batch, len(self._buffer))
        batch = [self._buffer.popleft() for _ in range(n)]
        METADATA_BUFFERED.set(len(self._buffer))
        try:
            await asyncio.wait_for(self.backend.write(batch), self._write_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed_batches += 1
            self.dropped += n
            METADATA_DROPPED.labels("write_failed").inc(n)
            log.warning("metadata batch of %d records dropped: %s", n, exc)
            return False
        self.written += n
        METADATA_WRITTEN.inc(n)
        return True

    async def _migrate(self) -> bool:
        try:
            await asyncio.wait_for(self.backend.migrate(), self._write_timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("metadata migration failed, will retry: %s", exc)
            return False
        self._migrated = True
        return True

    async def _run(self, migrate: bool) -> None:
        assert self._wakeup is not None
        backoff = 0.0
        self._migrated = self._migrated or not migrate
        while True:
            if backoff:
                await asyncio.sleep(backoff)
            if not self._migrated:
                if not await self._migrate():
                    backoff = min(self._max_backoff, max(0.1, backoff * 2))
                    continue
                backoff = 0.0
            if not self._buffer:
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), self._interval)
                except TimeoutError:
                    pass
                continue
            started = time.monotonic()
            ok = await self._write_one_batch()
            backoff = 0.0 if ok else min(self._max_backoff, max(0.1, backoff * 2))
            if ok and len(self._buffer) < self._max_batch:
                # Let records accumulate into bigger batches between flushes.
                await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - started)))
