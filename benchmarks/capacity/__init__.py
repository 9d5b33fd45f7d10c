"""Capacity benchmark (issue 20): the highest request rate each server sustains with p95 under the
SLO, same model, same client, same run. See :mod:`benchmarks.capacity.run`."""
