"""Small asyncio helpers shared by the gateway and the edge agent."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel ``tasks`` (None entries are skipped) and wait until each has ended; the
    CancelledError each one ends with is the expected outcome, not an error."""
    live = [t for t in tasks if t is not None]
    for task in live:
        task.cancel()
    for task in live:
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = ["cancel_and_wait"]
