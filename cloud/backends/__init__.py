"""Model backends behind one seam (:class:`Backend`): onnxruntime in-process by default.

Other engines (Triton) implement the same ABC; the batcher hands them batched numpy arrays.
"""

from cloud.backends._base import Backend, ModelKey, ModelSpec, TensorSpec
from cloud.backends._onnxruntime import OnnxRuntimeBackend

__all__ = ["Backend", "ModelKey", "ModelSpec", "OnnxRuntimeBackend", "TensorSpec"]
