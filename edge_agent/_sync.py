"""A small blocking wrapper around :class:`EdgeAgent` for code without an event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

from edge_agent._agent import EdgeAgent
from edge_agent._types import EdgeResult


class SyncEdgeAgent:
    """Runs an :class:`EdgeAgent` on a private event loop thread.

    ``with SyncEdgeAgent(settings) as agent: agent.infer(image)``; the constructor takes the
    same arguments as :class:`EdgeAgent`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="aiml021-edge", daemon=True
        )
        self._thread.start()
        self._args, self._kwargs = args, kwargs
        try:
            self.agent: EdgeAgent = self._call(self._make())
        except BaseException:
            self._stop_loop()  # an agent that cannot start must not leak its loop and thread
            raise

    async def _make(self) -> EdgeAgent:
        agent = EdgeAgent(*self._args, **self._kwargs)
        await agent.start()
        return agent

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncEdgeAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def infer(self, sample: np.ndarray, **kwargs: Any) -> EdgeResult:
        """Blocking :meth:`EdgeAgent.infer`."""
        result: EdgeResult = self._call(self.agent.infer(sample, **kwargs))
        return result

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Blocking :meth:`EdgeAgent.wait_connected`."""
        return bool(self._call(self.agent.wait_connected(timeout)))

    def metrics(self) -> dict[str, Any]:
        """The agent's metrics."""
        return self.agent.metrics()

    def close(self) -> None:
        """Close the agent and stop its loop thread (idempotent)."""
        if not self._loop.is_running():
            return
        self._call(self.agent.close())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


__all__ = ["SyncEdgeAgent"]
