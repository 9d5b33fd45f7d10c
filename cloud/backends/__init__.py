"""Model backends behind one seam (:class:`cloud.core.Backend`, re-exported here):
onnxruntime in-process by default.

Other engines (Triton) implement the same ABC; the batcher hands them batched numpy arrays.
:class:`TritonBackend` (``cloud.backends.triton``) is imported lazily, on first access.
"""

from typing import Any

from cloud.backends._onnxruntime import OnnxRuntimeBackend
from cloud.core import Backend


def __getattr__(name: str) -> Any:
    if name == "TritonBackend":
        from cloud.backends.triton import TritonBackend

        return TritonBackend
    raise AttributeError(f"module 'cloud.backends' has no attribute {name!r}")


__all__ = ["Backend", "OnnxRuntimeBackend", "TritonBackend"]
