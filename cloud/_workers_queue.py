"""How many requests wait in this process's batcher queues: the load signal an autoscaler can
act on before latency shows it (KEDA's Prometheus trigger on ``aiml021_gateway_queued_requests``,
deploy/k8s). Requests per second say how much work arrives; queue depth says whether the
replicas keep up with it.
"""

from __future__ import annotations

import weakref

from cloud.batching import DynamicBatcher, DynamicBatching
from cloud.core import ModelSpec
from cloud.core._batching import BatchObserver, RunFn


class QueueDepth:
    """A batcher factory (wraps :class:`DynamicBatching`) that remembers the batchers it made,
    so that :meth:`queued` can sum their queues."""

    def __init__(self, inner: DynamicBatching) -> None:
        self.inner = inner
        self._batchers: weakref.WeakSet[DynamicBatcher] = weakref.WeakSet()

    def __call__(self, spec: ModelSpec, run: RunFn, observer: BatchObserver) -> DynamicBatcher:
        batcher = self.inner(spec, run, observer)
        self._batchers.add(batcher)
        return batcher

    def queued(self) -> int:
        """Requests queued (not yet in a batch) over every model version of this process."""
        return sum(b.queued for b in list(self._batchers))


__all__ = ["QueueDepth"]
