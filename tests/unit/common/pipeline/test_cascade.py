"""Cascades between different models: PP-OCRv4 answers on the device, lines below the threshold
are read again by PP-OCRv6's recogniser from their region of the original frame. Here the cloud
model runs in-process (a real onnxruntime session on the v6 file) behind the ``refine`` seam; the
gateway path is tests/integration/cloud/test_cascade.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest

from common.errors import BundleError, DeadlineExceeded
from common.frames import render_frame
from common.pipeline import Cascade, load_pipeline
from common.pipeline._spec import BUILTIN_DIR


@pytest.fixture(scope="module")
def frame() -> npt.NDArray[np.uint8]:
    return render_frame(0, "hard", "test", 1).image[:, :, ::-1].copy()


@pytest.fixture(scope="module")
def cloud() -> ort.InferenceSession:
    path = load_pipeline("ppocr_v4_cascade").model_path("cloud_rec")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _refiner(session: ort.InferenceSession, seen: list[npt.NDArray[np.float32]]):  # type: ignore[no-untyped-def]
    async def refine(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        seen.append(x)
        return np.asarray(session.run(None, {"x": x})[0])

    return refine


async def test_confident_lines_stay_on_the_edge_and_doubtful_ones_go_to_the_cloud(
    frame: npt.NDArray[np.uint8], cloud: ort.InferenceSession
) -> None:
    pipeline = load_pipeline("ppocr_v4_cascade")
    seen: list[npt.NDArray[np.float32]] = []
    none = await Cascade(pipeline, _refiner(cloud, seen), threshold=0.0)(frame)
    assert none and {r.route for r in none} == {"edge"} and not seen
    edge_texts = [r.line.text for r in none]
    every = await Cascade(pipeline, _refiner(cloud, seen), threshold=1.01)(frame)
    assert {r.route for r in every} == {"cloud"} and len(seen) == len(every)
    assert [r.edge.text for r in every] == edge_texts  # the edge's reading is kept beside
    for x, r in zip(seen, every, strict=True):
        assert x.shape[:3] == (1, 3, 48) and x.dtype == np.float32
        assert np.abs(x).max() <= 1.0  # the region scaled like a recogniser input
        assert r.line.box == r.edge.box and 0.0 <= r.line.confidence <= 1.0
    # the default threshold sends exactly the lines whose calibrated confidence is below it
    seen.clear()
    cascade = Cascade(pipeline, _refiner(cloud, seen))
    mixed = await cascade(frame)
    below = [r for r in none if r.line.confidence < cascade.threshold]
    assert len(seen) == len(below) == sum(r.route == "cloud" for r in mixed)


async def test_a_cloud_failure_keeps_the_edge_reading(frame: npt.NDArray[np.uint8]) -> None:
    async def late(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        raise DeadlineExceeded("the answer would come too late")

    routed = await Cascade(load_pipeline("ppocr_v4_cascade"), late, threshold=1.01)(frame)
    assert routed and {r.route for r in routed} == {"edge_fallback"}
    assert all(r.line is r.edge and "too late" in r.error for r in routed)


async def test_an_output_that_does_not_fit_the_charset_falls_back(
    frame: npt.NDArray[np.uint8],
) -> None:
    async def wrong(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return np.zeros((1, 10, 7), np.float32)  # 7 classes, not v6's 18,710

    routed = await Cascade(load_pipeline("ppocr_v4_cascade"), wrong, threshold=1.01)(frame)
    assert {r.route for r in routed} == {"edge_fallback"}
    assert "does not fit its character list" in routed[0].error


def test_a_cascade_must_name_a_known_charset_model(tmp_path: Path) -> None:
    doc = json.loads((BUILTIN_DIR / "ppocr_v4_cascade.json").read_text())
    doc["cascade"]["charset"] = "nope"
    (tmp_path / "pipeline.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"cascade\.charset: model 'nope' is not in models"):
        load_pipeline(tmp_path)
    with pytest.raises(BundleError, match="has no cascade section"):
        Cascade(load_pipeline("ppocr_v4"), _refiner(None, []))
