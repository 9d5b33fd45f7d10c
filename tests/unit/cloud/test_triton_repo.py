"""Triton model repositories in the models directory: config.pbtxt parsed into ModelConfig,
auto-completed from the graph, checked like Triton's onnxruntime backend checks it, integer
versions selected by version_policy; anything that cannot be served names its file."""

from __future__ import annotations

import logging
from pathlib import Path

import onnx
import pytest
from inference import model_config_pb2 as mc
from onnx import TensorProto, helper

from cloud.batching import DynamicBatching
from cloud.core import ModelRepository, scan_models_dir
from cloud.core._triton_repo import is_triton_model, parse_config, specs_from_triton
from common.errors import BundleError, NotFound

CONFIG = """
name: "rec"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ 3, 48, -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ -1, 5 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2500 }
"""


def _onnx(path: Path, *, batch: str | int = "N") -> Path:
    """x [N, 3, 48, W] float32 -> y [N, W', 5]: a transpose-and-slice stand-in for a recognizer."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=0),  # N,3,W
            helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),  # N,W,3
            helper.make_node("Concat", ["t", "t"], ["c"], axis=2),  # N,W,6
            helper.make_node("Slice", ["c", "s", "e", "a"], ["y"]),  # N,W,5
        ],
        "rec",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 48, "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, "T", 5])],
        [
            helper.make_tensor("s", TensorProto.INT64, [1], [0]),
            helper.make_tensor("e", TensorProto.INT64, [1], [5]),
            helper.make_tensor("a", TensorProto.INT64, [1], [2]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _repo(
    root: Path, config: str | None = CONFIG, versions: tuple[str, ...] = ("1",), name: str = "rec"
) -> Path:
    model = root / name
    for v in versions:
        _onnx(model / v / "model.onnx")
    if config is not None:
        (model / "config.pbtxt").write_text(config)
    return model


def test_config_pbtxt_is_served_with_integer_versions_and_its_own_batching(
    tmp_path: Path,
) -> None:
    model = _repo(tmp_path, versions=("1", "2"))
    specs = specs_from_triton(model, default_max_batch_size=64)
    # default version_policy: the newest version only, as Triton serves it
    assert [s.version for s in specs] == ["2"]
    spec = specs[0]
    assert spec.name == "rec" and spec.onnx_path == model / "2" / "model.onnx"
    assert spec.max_batch_size == 8 and spec.max_queue_delay_s == pytest.approx(0.0025)
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("x", "float32", (-1, 3, 48, -1))]
    assert [(t.name, t.shape) for t in spec.outputs] == [("y", (-1, -1, 5))]
    cfg = mc.ModelConfig.FromString(spec.model_config)
    assert cfg.name == "rec" and cfg.backend == "onnxruntime" and cfg.max_batch_size == 8
    assert list(cfg.input[0].dims) == [3, 48, -1]
    assert cfg.dynamic_batching.max_queue_delay_microseconds == 2500
    # the batcher takes the model's delay and cap
    batcher = DynamicBatching()(spec, None, lambda *a: None)  # type: ignore[arg-type]
    assert batcher._cfg.max_queue_delay_s == pytest.approx(0.0025)
    assert batcher._cfg.max_batch_size == 8


@pytest.mark.parametrize(
    ("policy", "served"),
    [
        ("version_policy { all {} }", ["1", "2", "10"]),
        ("version_policy { latest { num_versions: 2 } }", ["2", "10"]),
        ("version_policy { specific { versions: [1, 10] } }", ["1", "10"]),
    ],
)
def test_version_policy_selects_versions_numerically(
    tmp_path: Path, policy: str, served: list[str]
) -> None:
    model = _repo(tmp_path, CONFIG + policy, versions=("1", "2", "10"))
    specs = specs_from_triton(model, 64)
    assert [s.version for s in specs] == served
    repo = ModelRepository(specs)
    assert repo.versions("rec") == served
    assert repo.resolve("rec").version == served[-1]  # empty version: the newest
    with pytest.raises(NotFound, match="no version '3'"):
        repo.resolve("rec", "3")


def test_missing_config_is_completed_from_the_graph(tmp_path: Path) -> None:
    model = _repo(tmp_path, config=None)
    assert is_triton_model(model)
    (spec,) = specs_from_triton(model, default_max_batch_size=16)
    cfg = mc.ModelConfig.FromString(spec.model_config)
    assert cfg.max_batch_size == 16 and cfg.platform == "onnxruntime_onnx"
    assert [(i.name, list(i.dims), mc.DataType.Name(i.data_type)) for i in cfg.input] == [
        ("x", [3, 48, -1], "TYPE_FP32")
    ]
    assert [o.name for o in cfg.output] == ["y"]


def test_non_integer_version_directories_are_ignored_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = _repo(tmp_path, versions=("1", "01", "latest"))
    with caplog.at_level(logging.WARNING):
        specs = specs_from_triton(model, 64)
    assert [s.version for s in specs] == ["1"]
    assert "'01'" in caplog.text and "'latest'" in caplog.text


def test_fields_the_gateway_does_not_interpret_are_named_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.pbtxt"
    path.write_text(
        CONFIG
        + "model_warmup [ { name: 'w' batch_size: 1 } ]\n"
        + "optimization { execution_accelerators { cpu_execution_accelerator: [ { name: 'x' } ] } }"
    )
    with caplog.at_level(logging.WARNING):
        cfg = parse_config(path)
    assert cfg.max_batch_size == 8
    assert str(path) in caplog.text and "model_warmup, optimization" in caplog.text


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (CONFIG.replace("max_batch_size: 8", "max_batch_size: 0"), "max_batch_size 0"),
        (CONFIG.replace('"onnxruntime_onnx"', '"tensorrt_plan"'), "'tensorrt_plan'"),
        (CONFIG.replace('name: "rec"', 'name: "other"'), "differs from its directory name"),
        (CONFIG.replace("TYPE_FP32 dims: [ 3", "TYPE_FP16 dims: [ 3"), "data_type TYPE_FP16"),
        (CONFIG.replace("dims: [ 3, 48", "dims: [ 3, 32"), "do not match the model's shape"),
        (CONFIG.replace('name: "x"', 'name: "image"'), "do not match the inputs"),
        (CONFIG.replace('name: "y"', 'name: "z"'), "'z' is not an output"),
        (
            CONFIG.replace("dims: [ -1, 5 ] }", "dims: [ -1, 5 ] reshape { shape: [5] } }"),
            "reshape",
        ),
        (CONFIG + "version_policy { specific { versions: [7] } }", r"versions \[7\]"),
        (CONFIG + "sequence_batching { }", "sequence_batching is not supported"),
        ("max_batch_size: [", "not a valid model configuration"),
    ],
)
def test_what_cannot_be_served_is_an_error_naming_the_config(
    tmp_path: Path, config: str, message: str
) -> None:
    model = _repo(tmp_path, config)
    with pytest.raises(BundleError, match=message) as err:
        specs_from_triton(model, 64)
    assert str(model / "config.pbtxt") in str(err.value)


def test_a_version_without_its_model_file_names_the_file(tmp_path: Path) -> None:
    model = _repo(tmp_path)
    (model / "1" / "model.onnx").rename(model / "1" / "rec.onnx")
    with pytest.raises(BundleError, match=r"1/model\.onnx: model file is missing"):
        specs_from_triton(model, 64)
    (model / "config.pbtxt").write_text(CONFIG + 'default_model_filename: "rec.onnx"\n')
    assert [s.onnx_path.name for s in specs_from_triton(model, 64)] == ["rec.onnx"]


def test_a_fixed_batch_dimension_cannot_be_batched(tmp_path: Path) -> None:
    model = tmp_path / "rec"
    _onnx(model / "1" / "model.onnx", batch=1)
    with pytest.raises(BundleError, match="dynamic batch dimension"):
        specs_from_triton(model, 64)
    (model / "config.pbtxt").write_text(CONFIG)
    with pytest.raises(BundleError, match="needs a dynamic first"):
        specs_from_triton(model, 64)


def test_a_garbage_model_file_names_itself(tmp_path: Path) -> None:
    model = _repo(tmp_path)
    (model / "1" / "model.onnx").write_bytes(b"not onnx")
    with pytest.raises(BundleError, match=r"1/model\.onnx: cannot read the ONNX model"):
        specs_from_triton(model, 64)


def test_scan_serves_triton_models_beside_others_and_names_what_it_skips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _repo(tmp_path, name="rec")
    _repo(tmp_path, None, name="broken")
    (tmp_path / "broken" / "config.pbtxt").write_text(
        CONFIG.replace('"rec"', '"broken"', 1).replace("max_batch_size: 8", "max_batch_size: 0")
    )
    (tmp_path / "stray").mkdir()
    with caplog.at_level(logging.WARNING):
        specs = scan_models_dir(tmp_path, 64)
    assert [(s.name, s.version) for s in specs] == [("rec", "1")]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(tmp_path / "broken" / "config.pbtxt") in errors[0].getMessage()
    assert any(
        r.levelno == logging.WARNING and str(tmp_path / "stray") in r.getMessage()
        for r in caplog.records
    )
