"""Returning freed heap memory to the operating system (glibc only).

glibc's malloc keeps memory freed by one thread in that thread's arena for reuse; with gRPC's
threads receiving large messages (a 15 MiB rejected request is freed at once, but its pages stay
mapped), the gateway's RSS would stay at the peak of an attack. ``malloc_trim(0)`` gives free
pages of every arena back; :class:`HeapTrimmer` calls it periodically off the event loop. On a
libc without it (musl, macOS) trimming is a no-op.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

from common.aio import cancel_and_wait

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


_TRIM = _load_trim()


def trim_heap() -> bool:
    """Give free heap pages back to the OS now; True when memory was released (False also
    where the libc cannot trim)."""
    return bool(_TRIM(0)) if _TRIM is not None else False


class HeapTrimmer:
    """Calls :func:`trim_heap` every ``interval_s`` in a worker thread (the call walks every
    arena; ctypes releases the GIL, so the event loop keeps serving)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start trimming (inside the running loop); a no-op where the libc cannot trim."""
        if _TRIM is not None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="heap-trim")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(trim_heap)
            except Exception:  # never let housekeeping end the gateway
                log.exception("malloc_trim failed")

    async def close(self) -> None:
        """Stop trimming."""
        await cancel_and_wait(self._task)
        self._task = None


__all__ = ["HeapTrimmer", "trim_heap"]


def freeze_start_up_objects() -> int:
    """Move every object alive now (models' sessions and specs, settings, libraries' tables: what
    start-up loaded and the process keeps for its life) out of the cyclic garbage collector's
    generations (``gc.freeze``), after one last full collection; returns how many.

    A full collection walks every tracked object; with the start-up heap still in the
    generations, one took 56-60 ms on this box and stopped the event loop for that long, so a
    flood of requests, which makes the collector run, stalled every other device's answers (the
    first full collection under a 3,000-call flood: the legitimate device's p99 25-64 ms instead
    of 4-5 ms). Frozen objects are never scanned or freed by the collector again; reference
    counting still frees them.
    """
    import gc

    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
