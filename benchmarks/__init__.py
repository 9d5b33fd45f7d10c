"""Reproducible measurements; one command per benchmark, results under benchmarks/results/."""
