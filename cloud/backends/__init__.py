"""Model backends behind one seam (:class:`Backend`): onnxruntime in-process by default.

Other engines (Triton) implement the same ABC; the batcher hands them batched numpy arrays.
:class:`TritonBackend` (``cloud.backends.triton``) is imported lazily, on first access.
"""

from typing import Any

from cloud.backends._base import Backend, ModelKey, ModelSpec, TensorSpec
from cloud.backends._onnxruntime import OnnxRuntimeBackend


def __getattr__(name: str) -> Any:
    if name == "TritonBackend":
        from cloud.backends.triton import TritonBackend

        return TritonBackend
    raise AttributeError(f"module 'cloud.backends' has no attribute {name!r}")


__all__ = ["Backend", "ModelKey", "ModelSpec", "OnnxRuntimeBackend", "TensorSpec", "TritonBackend"]
