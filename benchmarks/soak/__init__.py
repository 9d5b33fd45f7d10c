"""Soak and chaos run of the gateway (not in CI): ``python -m benchmarks.soak --help``."""
