"""Dynamic batching per model version: EDF order, priorities, bounded queue, deadline checks."""

from cloud.batching._batcher import BatcherConfig, BatchObserver, DynamicBatcher

__all__ = ["BatchObserver", "BatcherConfig", "DynamicBatcher"]
