"""Pipeline descriptions and the runner: checks at load time, steps by name, models by file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from common.errors import BundleError, NotFound
from common.pipeline import STEPS, builtin_pipelines, load_pipeline, step


@step("test_add")
def _add(models: Any, x: np.ndarray, y: float = 0.0) -> tuple[np.ndarray, float]:
    return x + y, float(y)


def _doubler(path: Path) -> None:
    """A one-node ONNX model: y = 2 x."""
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph(
        [node],
        "double",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def _write(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Path:
    doc = {
        "schema": "aiml021.pipeline/1",
        "name": "toy",
        "input": "x",
        "outputs": extra.pop("outputs", ["z"]),
        "models": {"double": {"file": "double.onnx"}},
        "steps": steps,
        **extra,
    }
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_description_runs_its_steps_in_order_with_models_beside_it(tmp_path: Path) -> None:
    _doubler(tmp_path / "double.onnx")
    _write(
        tmp_path,
        [
            {"op": "onnx", "in": ["x"], "out": ["y"], "params": {"model": "double"}},
            {"op": "test_add", "in": ["y"], "out": ["z", "added"], "params": {"y": 1.5}},
        ],
        outputs=["z", "added"],
    )
    pipeline = load_pipeline(tmp_path)  # the directory holding pipeline.json
    out = pipeline(np.array([1.0, 2.0], np.float32))
    assert out["z"].tolist() == [3.5, 5.5] and out["added"] == 1.5
    assert pipeline.with_params("test_add", {"y": 0.0})(np.ones(1, np.float32))["z"].tolist() == [
        2.0
    ]


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ([{"op": "nope", "in": ["x"], "out": ["z"]}], r"steps.0 \(nope\): unknown op"),
        ([{"op": "test_add", "in": ["w"], "out": ["z"]}], r"reads \['w'\] before any step"),
        (
            [{"op": "onnx", "in": ["x"], "out": ["z"], "params": {"model": "m"}}],
            "model 'm' is not in models",
        ),
        ([{"op": "test_add", "in": ["x"], "out": ["q"]}], r"outputs \['z'\] are never written"),
        ([{"op": "test_add", "in": ["x"], "out": []}], "steps.0.out"),
    ],
)
def test_an_inconsistent_description_is_rejected_naming_the_step(
    tmp_path: Path, steps: list[dict[str, Any]], message: str
) -> None:
    path = _write(tmp_path, steps)
    with pytest.raises(BundleError, match=message) as err:
        load_pipeline(path)
    assert str(path) in str(err.value)


def test_a_missing_model_file_or_pipeline_is_not_found(tmp_path: Path) -> None:
    path = _write(
        tmp_path, [{"op": "onnx", "in": ["x"], "out": ["z"], "params": {"model": "double"}}]
    )
    with pytest.raises(NotFound, match=r"double\.onnx: model file is missing"):
        load_pipeline(path)(np.ones(1, np.float32))
    with pytest.raises(NotFound, match="built-in: ppocr_v4"):
        load_pipeline("no_such_pipeline")


def test_the_built_in_ocr_pipelines_are_valid_and_differ_only_in_models() -> None:
    assert {"ppocr_v4", "ppocr_v6", "ppocr_v4det_v6rec"} <= set(builtin_pipelines())
    specs = [load_pipeline(name).spec for name in ("ppocr_v4", "ppocr_v6", "ppocr_v4det_v6rec")]
    assert all(s.steps[-1].op == "lines" for s in specs)
    assert [st.op for st in specs[0].steps] == [st.op for st in specs[2].steps]
    assert specs[2].models["det"] == specs[0].models["det"]
    assert specs[2].models["rec"] == specs[1].models["rec"]
    assert {"det_preprocess", "db_boxes", "ctc_decode", "calibrate"} <= set(STEPS)
