"""Tiny deterministic ONNX models for backend tests (built with onnx.helper, no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tail_model(
    path: Path, channels: int = 4, side: int = 3, classes: int = 10, seed: int = 0
) -> Path:
    """A "tail segment": features [N, C, H, W] -> Relu -> Flatten -> Gemm -> logits [N, classes]."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((channels * side * side, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["features"], ["r"]),
            helper.make_node("Flatten", ["r"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "W", "B"], ["logits"]),
        ],
        "tail",
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, [None, channels, side, side]
            )
        ],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, classes])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by the older onnxruntime in the Triton venv
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
