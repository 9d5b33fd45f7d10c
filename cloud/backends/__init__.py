"""Model backends behind one seam (:class:`cloud.core.Backend`, re-exported here):
onnxruntime in-process by default; :class:`PipelineBackend` serves pipelines with Python steps
(``pipeline.json``) beside the models of the backend it wraps.

Other engines (Triton) implement the same ABC; the batcher hands them batched numpy arrays.
:class:`TritonBackend` (``cloud.backends.triton``) is imported lazily, on first access.
"""

from typing import Any

from cloud.backends._onnxruntime import OnnxRuntimeBackend
from cloud.backends._pipeline import PipelineBackend
from cloud.core import Backend


def __getattr__(name: str) -> Any:
    if name == "TritonBackend":
        from cloud.backends.triton import TritonBackend

        return TritonBackend
    raise AttributeError(f"module 'cloud.backends' has no attribute {name!r}")


__all__ = ["Backend", "OnnxRuntimeBackend", "PipelineBackend", "TritonBackend"]
