"""A tiny synthetic bundle with the reference bundle's layout (stage1..3, two cut points, three
exits, tails, full), built with onnx.helper so tests need neither torch nor the trained model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from common.bundle import file_entry

CLASSES = [f"class{i}" for i in range(10)]


def _vi(name: str, shape: Sequence[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _stage_nodes(rng: np.random.Generator, idx: int, cin: int, cout: int, src: str, scale: float):
    w = numpy_helper.from_array(
        (rng.standard_normal((cout, cin, 3, 3)) * 0.5).astype(np.float32), f"w{idx}"
    )
    nodes = [
        helper.make_node("Conv", [src, f"w{idx}"], [f"c{idx}"], strides=[2, 2], pads=[1] * 4),
        helper.make_node("Relu", [f"c{idx}"], [f"cut{idx}"]),
    ]
    return nodes, [w]


def _head_nodes(rng: np.random.Generator, idx: int, cin: int, src: str, out: str, scale: float):
    w = numpy_helper.from_array(
        (rng.standard_normal((cin, 10)) * scale).astype(np.float32), f"hw_{out}"
    )
    b = numpy_helper.from_array((rng.standard_normal(10) * 0.1).astype(np.float32), f"hb_{out}")
    nodes = [
        helper.make_node("GlobalAveragePool", [src], [f"gap_{out}"]),
        helper.make_node("Flatten", [f"gap_{out}"], [f"flat_{out}"], axis=1),
        helper.make_node("MatMul", [f"flat_{out}", f"hw_{out}"], [f"mm_{out}"]),
        helper.make_node("Add", [f"mm_{out}", f"hb_{out}"], [out]),
    ]
    return nodes, [w, b]


def _save(path: Path, nodes, inits, inputs, outputs) -> None:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def make_bundle(
    root: Path,
    thresholds: Sequence[float | None] = (0.9, 0.9, 0.0),
    temperatures: Sequence[float] = (1.0, 1.0, 1.0),
    seed: int = 0,
    head_scale: float = 3.0,
    cut1_codec: str | None = "raw",
) -> Path:
    """Write a bundle to ``root`` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    s1, i1 = _stage_nodes(rng, 1, 1, 4, "input", head_scale)
    s2, i2 = _stage_nodes(rng, 2, 4, 8, "cut1", head_scale)
    e1, j1 = _head_nodes(rng, 1, 4, "cut1", "exit1_logits", head_scale)
    e2, j2 = _head_nodes(rng, 2, 8, "cut2", "exit2_logits", head_scale)
    f3, j3 = _head_nodes(rng, 3, 8, "cut2", "logits", head_scale)
    n = "N"
    x = _vi("input", [n, 1, 28, 28])
    c1, c2 = _vi("cut1", [n, 4, 14, 14]), _vi("cut2", [n, 8, 7, 7])
    l1, l2, l3 = _vi("exit1_logits", [n, 10]), _vi("exit2_logits", [n, 10]), _vi("logits", [n, 10])
    _save(root / "stage1.onnx", s1 + e1, i1 + j1, [x], [l1, c1])
    _save(root / "stage2.onnx", s2 + e2, i2 + j2, [c1], [l2, c2])
    _save(root / "stage3.onnx", f3, j3, [c2], [l3])
    _save(root / "tail_cut1.onnx", s2 + f3, i2 + j3, [c1], [l3])
    _save(root / "tail_cut2.onnx", f3, j3, [c2], [l3])
    _save(root / "full.onnx", s1 + s2 + f3, i1 + i2 + j3, [x], [l3])

    def spec(name: str, shape: list[int | None]) -> dict[str, object]:
        return {"name": name, "dtype": "float32", "shape": shape}

    seg = {
        "stage1": (
            [spec("input", [None, 1, 28, 28])],
            [spec("exit1_logits", [None, 10]), spec("cut1", [None, 4, 14, 14])],
        ),
        "stage2": (
            [spec("cut1", [None, 4, 14, 14])],
            [spec("exit2_logits", [None, 10]), spec("cut2", [None, 8, 7, 7])],
        ),
        "stage3": ([spec("cut2", [None, 8, 7, 7])], [spec("logits", [None, 10])]),
        "tail_cut1": ([spec("cut1", [None, 4, 14, 14])], [spec("logits", [None, 10])]),
        "tail_cut2": ([spec("cut2", [None, 8, 7, 7])], [spec("logits", [None, 10])]),
        "full": ([spec("input", [None, 1, 28, 28])], [spec("logits", [None, 10])]),
    }
    manifest = {
        "format_version": 1,
        "name": "synthetic_branchy",
        "version": "0.0.1",
        "description": "random-weight test bundle",
        "classes": CLASSES,
        "input": {
            "name": "input",
            "dtype": "float32",
            "shape": [None, 1, 28, 28],
            "layout": "NCHW",
            "preprocessing": {"scale": 1 / 255, "mean": [0.286], "std": [0.353]},
        },
        "segments": [
            {"name": k, "file": f"{k}.onnx", "inputs": v[0], "outputs": v[1]}
            for k, v in seg.items()
        ],
        "full": "full",
        "edge_chain": ["stage1", "stage2", "stage3"],
        "cut_points": [
            {
                "name": "cut1",
                "head": ["stage1"],
                "tail": "tail_cut1",
                "shape": [None, 4, 14, 14],
                "float32_bytes": 4 * 14 * 14 * 4,
                "codec": {"default": cut1_codec} if cut1_codec else None,
            },
            {
                "name": "cut2",
                "head": ["stage1", "stage2"],
                "tail": "tail_cut2",
                "shape": [None, 8, 7, 7],
                "float32_bytes": 8 * 7 * 7 * 4,
                "codec": None,
            },
        ],
        "exits": [
            {
                "name": name,
                "segment": segm,
                "logits": lg,
                "index": i,
                "temperature": float(temperatures[i]),
                "threshold": thresholds[i],
            }
            for i, (name, segm, lg) in enumerate(
                [
                    ("exit1", "stage1", "exit1_logits"),
                    ("exit2", "stage2", "exit2_logits"),
                    ("final", "stage3", "logits"),
                ]
            )
        ],
        "files": {f"{k}.onnx": file_entry(root / f"{k}.onnx").model_dump() for k in seg},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return root


def images(n: int, seed: int = 1) -> np.ndarray:
    """``n`` random uint8 28x28 images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
