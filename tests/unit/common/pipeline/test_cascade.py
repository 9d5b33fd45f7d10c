"""Cascades between different models: PP-OCRv4 answers on the device, lines below the threshold
are read again by PP-OCRv6's recogniser from their region of the original frame. Here the cloud
model runs in-process (a real onnxruntime session on the v6 file) behind the ``refine`` seam; the
gateway path is tests/integration/cloud/test_cascade.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from common.cli import main
from common.errors import BundleError, DeadlineExceeded, NotFound
from common.frames import render_frame
from common.pipeline import Cascade, ctc_greedy, load_pipeline
from common.pipeline._ctc import BEST, BEST_PROB, best_path_model, ctc_best_path
from common.pipeline._spec import BUILTIN_DIR


@pytest.fixture(scope="module")
def frame() -> npt.NDArray[np.uint8]:
    return render_frame(0, "hard", "test", 1).image[:, :, ::-1].copy()


@pytest.fixture(scope="module")
def cloud() -> ort.InferenceSession:
    """PP-OCRv6's recogniser with its best-path head, as the gateway would serve it."""
    path = load_pipeline("ppocr_v4_cascade").model_path("cloud_rec")
    model = best_path_model(onnx.load(str(path)))
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _refiner(session: ort.InferenceSession, seen: list[npt.NDArray[np.float32]]):  # type: ignore[no-untyped-def]
    async def refine(x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        seen.append(x)
        best, prob = session.run([BEST, BEST_PROB], {"x": x})
        return {BEST: best, BEST_PROB: prob}

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
    async def late(x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        raise DeadlineExceeded("the answer would come too late")

    routed = await Cascade(load_pipeline("ppocr_v4_cascade"), late, threshold=1.01)(frame)
    assert routed and {r.route for r in routed} == {"edge_fallback"}
    assert all(r.line is r.edge and "too late" in r.error for r in routed)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"y": np.zeros((1, 10, 7), np.float32)}, "not ['best', 'best_prob']"),
        ({BEST: np.full((1, 3), 99_999), BEST_PROB: np.ones((1, 3))}, "outside the character list"),
        ({BEST: np.ones((1, 3), np.int64), BEST_PROB: np.ones((1, 2))}, "3 classes but 2"),
    ],
)
async def test_a_cloud_answer_that_does_not_fit_falls_back(
    frame: npt.NDArray[np.uint8], answer: dict[str, npt.NDArray[Any]], message: str
) -> None:
    async def wrong(x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[Any]]:
        return answer

    routed = await Cascade(load_pipeline("ppocr_v4_cascade"), wrong, threshold=1.01)(frame)
    assert {r.route for r in routed} == {"edge_fallback"}
    assert message in routed[0].error


def test_the_best_path_head_decodes_like_the_full_matrix(cloud: ort.InferenceSession) -> None:
    path = load_pipeline("ppocr_v4_cascade").model_path("cloud_rec")
    full = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 3, 48, 200)).astype(np.float32)
    probs = full.run(None, {"x": x})[0]
    best, prob = cloud.run([BEST, BEST_PROB], {"x": x})
    np.testing.assert_array_equal(best, probs.argmax(-1))
    np.testing.assert_array_equal(prob, probs.max(-1))
    charset = [str(i) for i in range(probs.shape[-1])]
    for i in range(2):
        assert ctc_best_path(best[i], prob[i], charset).text == ctc_greedy(probs[i], charset).text


def test_a_cascade_must_name_a_known_charset_model(tmp_path: Path) -> None:
    doc = json.loads((BUILTIN_DIR / "ppocr_v4_cascade.json").read_text())
    doc["cascade"]["charset"] = "nope"
    (tmp_path / "pipeline.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"cascade\.charset: model 'nope' is not in models"):
        load_pipeline(tmp_path)
    with pytest.raises(BundleError, match="has no cascade section"):
        Cascade(load_pipeline("ppocr_v4"), _refiner(None, []))


def test_cli_ctc_head_writes_a_servable_best_path_recogniser(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = load_pipeline("ppocr_v4").model_path("rec")
    out = tmp_path / "rec_best" / "1" / "model.onnx"
    assert main(["ctc-head", str(rec), "-o", str(out)]) == 0
    assert "best [N, T] int64" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [BEST, BEST_PROB]
    best, prob = session.run(None, {"x": np.zeros((1, 3, 48, 64), np.float32)})
    assert best.shape == prob.shape == (1, 8) and best.dtype == np.int64
    assert main(["ctc-head", str(rec), "-o", str(out), "--from-output", "nope"]) != 0
    assert "has no output 'nope'" in capsys.readouterr().err


def test_a_description_extends_another_and_stays_in_step_with_it(tmp_path: Path) -> None:
    cascade = load_pipeline("ppocr_v4_cascade").spec
    edge = load_pipeline("ppocr_v4").spec
    assert cascade.steps == edge.steps  # ocr-eval --write on ppocr_v4 reaches the cascade too
    assert set(cascade.models) == {*edge.models, "cloud_rec"} and cascade.calibration is None
    (tmp_path / "two.json").write_text(json.dumps({"extends": "ppocr_v4_cascade", "name": "two"}))
    with pytest.raises(BundleError, match="one level only"):
        load_pipeline(tmp_path / "two.json")
    (tmp_path / "odd.json").write_text(json.dumps({"extends": 3}))
    with pytest.raises(BundleError, match="extends must name a pipeline"):
        load_pipeline(tmp_path / "odd.json")
    (tmp_path / "gone.json").write_text(json.dumps({"extends": "no_such_pipeline"}))
    with pytest.raises(NotFound, match="no pipeline 'no_such_pipeline'"):
        load_pipeline(tmp_path / "gone.json")
