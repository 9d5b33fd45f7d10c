"""A real Triton Inference Server for tests, benchmarks and manual runs (not installed)."""

from scripts.triton.launch import REPO_ROOT, TritonServer, triton_python

__all__ = ["REPO_ROOT", "TritonServer", "triton_python"]
