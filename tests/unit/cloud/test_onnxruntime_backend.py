"""The onnxruntime backend warms each model up at load (issue 13): one batch of
``max_batch_size`` zeros, so that the session's memory arena reaches what the largest batch needs
at load instead of growing under traffic whenever a batch larger than any before arrives (the
soak saw that as a slow RSS rise over each gateway's first hour)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from cloud.backends import OnnxRuntimeBackend
from cloud.core import ModelSpec, TensorSpec
from tests.support.gateway import vector_model


def _fixed_model(path: Path) -> Path:
    """``x [N, 4] float32 -> sum over the 4 -> y [N, 1]``: only the batch varies."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        "fixed_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _spec(path: Path, shape: tuple[int, ...], dtype: str = "float32") -> ModelSpec:
    return ModelSpec(
        name="m",
        version="1",
        onnx_path=path,
        inputs=(TensorSpec("x", dtype, shape),),
        outputs=(TensorSpec("y", "float32", (-1, 1)),),
        max_batch_size=48,
    )


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, ...]]]:
    """Input shapes of every batch any onnxruntime session computes."""
    seen: list[tuple[int, ...]] = []
    run = ort.InferenceSession.run

    def spy(self: Any, names: Any, feeds: dict[str, Any], *args: Any, **kw: Any) -> Any:
        seen.extend(np.asarray(v).shape for v in feeds.values())
        return run(self, names, feeds, *args, **kw)

    monkeypatch.setattr(ort.InferenceSession, "run", spy)
    yield seen


async def _served_answer(backend: OnnxRuntimeBackend, spec: ModelSpec) -> np.ndarray:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    return (await backend.infer(spec.key, {"x": x}, ["y"]))["y"]


async def test_a_model_computes_its_largest_batch_at_load(
    tmp_path: Path, batches: list[tuple[int, ...]]
) -> None:
    backend = OnnxRuntimeBackend()
    spec = _spec(_fixed_model(tmp_path / "m.onnx"), (-1, 4))
    try:
        await backend.load(spec)
        assert batches == [(48, 4)]
        np.testing.assert_array_equal(await _served_answer(backend, spec), [[6.0], [22.0]])
    finally:
        await backend.close()


async def test_a_model_with_another_variable_dimension_is_not_warmed(
    tmp_path: Path, batches: list[tuple[int, ...]]
) -> None:
    backend = OnnxRuntimeBackend()
    spec = _spec(vector_model(tmp_path / "v.onnx"), (-1, -1))
    try:
        await backend.load(spec)
        assert batches == []
        np.testing.assert_array_equal(await _served_answer(backend, spec), [[6.0], [22.0]])
    finally:
        await backend.close()


async def test_a_model_that_refuses_the_warm_up_batch_is_served_anyway(
    tmp_path: Path, batches: list[tuple[int, ...]]
) -> None:
    # The spec's dtype is wrong for the ONNX file: onnxruntime refuses the int64 zeros.
    backend = OnnxRuntimeBackend()
    spec = _spec(_fixed_model(tmp_path / "m.onnx"), (-1, 4), dtype="int64")
    try:
        await backend.load(spec)
        assert batches == [(48, 4)]
        np.testing.assert_array_equal(await _served_answer(backend, spec), [[6.0], [22.0]])
    finally:
        await backend.close()


async def test_warm_up_can_be_switched_off(tmp_path: Path, batches: list[tuple[int, ...]]) -> None:
    backend = OnnxRuntimeBackend(warmup=False)
    spec = _spec(_fixed_model(tmp_path / "m.onnx"), (-1, 4))
    try:
        await backend.load(spec)
        assert batches == []
    finally:
        await backend.close()


async def test_loading_a_model_never_queues_another_models_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One compute thread (the default): a model's load used to take it for its session and
    # warm-up, and every batch of every other model waited behind it.
    from cloud.backends import _onnxruntime

    backend = OnnxRuntimeBackend()
    served = _spec(_fixed_model(tmp_path / "m.onnx"), (-1, 4))
    loading = dataclasses.replace(served, name="loading")
    warming, release = threading.Event(), threading.Event()
    warm_up = _onnxruntime._warm_up

    def held_warm_up(session: ort.InferenceSession, model: ModelSpec) -> None:
        if model.name == "loading":
            warming.set()
            release.wait(10)
        warm_up(session, model)

    monkeypatch.setattr(_onnxruntime, "_warm_up", held_warm_up)
    try:
        await backend.load(served)
        load = asyncio.create_task(backend.load(loading))
        assert await asyncio.to_thread(warming.wait, 5)
        # the served model computes while the other one is held in its warm-up
        answer = await asyncio.wait_for(_served_answer(backend, served), 5)
        np.testing.assert_array_equal(answer, [[6.0], [22.0]])
        assert not load.done()
        release.set()
        await load
        np.testing.assert_array_equal(await _served_answer(backend, loading), [[6.0], [22.0]])
    finally:
        release.set()
        await backend.close()
