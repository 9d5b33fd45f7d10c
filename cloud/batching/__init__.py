"""Dynamic batching per model version: EDF order, priorities, bounded queue, deadline checks."""

from cloud.batching._batcher import BatcherConfig, DynamicBatcher, DynamicBatching

__all__ = ["BatcherConfig", "DynamicBatcher", "DynamicBatching"]
