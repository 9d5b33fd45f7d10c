"""A foreign architecture built with onnx.helper (random weights): residual adds, a concatenation
and depthwise convolutions, so split is tested on a graph we did not train or export."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# Tensors inside the residual branch / before the concat merge: must not be cut points.
INSIDE_RESIDUAL = "dw1"
RESIDUAL_OUT = "res1"
CONCAT_OUT = "cat"


def build_foreign(
    seed: int = 0, early_exit: bool = False, dynamic: bool = False
) -> onnx.ModelProto:
    """The foreign graph; ``early_exit`` adds ``exit1_logits`` computed from ``pool1``;
    ``dynamic`` declares the input ``x[N,3,H,W]`` (the global pooling accepts any size)."""
    rng = np.random.default_rng(seed)
    inits: list[TensorProto] = []

    def w(name: str, *shape: int) -> str:
        inits.append(
            numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
        )
        return name

    n = helper.make_node
    nodes = [
        n("Conv", ["x", w("w_stem", 8, 3, 3, 3), w("b_stem", 8)], ["stem"], pads=[1, 1, 1, 1]),
        n("Relu", ["stem"], ["stem_r"]),
        # residual block with a depthwise 3x3 + pointwise 1x1 branch
        n("Conv", ["stem_r", w("w_dw1", 8, 1, 3, 3)], ["dw1"], pads=[1, 1, 1, 1], group=8),
        n("Relu", ["dw1"], ["dw1_r"]),
        n("Conv", ["dw1_r", w("w_pw1", 8, 8, 1, 1)], ["pw1"]),
        n("Add", ["stem_r", "pw1"], ["res1"]),
        n("Relu", ["res1"], ["res1_r"]),
        n("MaxPool", ["res1_r"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        # inception-style two branches concatenated
        n("Conv", ["pool1", w("w_a", 6, 8, 1, 1)], ["br_a"]),
        n("Conv", ["pool1", w("w_b", 6, 8, 3, 3)], ["br_b"], pads=[1, 1, 1, 1]),
        n("Concat", ["br_a", "br_b"], ["cat"], axis=1),
        n("Relu", ["cat"], ["cat_r"]),
        n("Conv", ["cat_r", w("w_dw2", 12, 1, 3, 3)], ["dw2"], pads=[1, 1, 1, 1], group=12),
        n("GlobalAveragePool", ["dw2"], ["gap"]),
        n("Flatten", ["gap"], ["flat"]),
        n("Gemm", ["flat", w("w_fc", 5, 12), w("b_fc", 5)], ["logits"], transB=1),
    ]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 5])]
    if early_exit:
        nodes += [
            n("GlobalAveragePool", ["pool1"], ["e_gap"]),
            n("Flatten", ["e_gap"], ["e_flat"]),
            n("Gemm", ["e_flat", w("w_e", 5, 8)], ["exit1_logits"], transB=1),
        ]
        outputs.insert(
            0, helper.make_tensor_value_info("exit1_logits", TensorProto.FLOAT, ["N", 5])
        )
    graph = helper.make_graph(
        nodes,
        "foreign",
        [
            helper.make_tensor_value_info(
                "x", TensorProto.FLOAT, ["N", 3, "H", "W"] if dynamic else ["N", 3, 16, 16]
            )
        ],
        outputs,
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
