"""A frame's regions in one request: stacked into one batch, padded on the right with mid-grey,
and read by PP-OCRv6's recogniser as they are read one at a time."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from common.errors import InvalidArgument
from common.frames import render_frame
from common.pipeline import (
    best_path_model,
    ctc_best_path,
    load_pipeline,
    region_input,
    stack_regions,
)


def test_regions_keep_their_pixels_and_widths_and_pad_with_zero() -> None:
    a = np.full((1, 1, 4, 3), 0.5, np.float32)
    b = np.full((1, 1, 4, 7), -1.0, np.float32)
    batch, widths = stack_regions([a, b])
    assert batch.shape == (2, 1, 4, 7) and batch.dtype == np.float32
    assert widths == [3, 7]
    assert (batch[0, :, :, :3] == 0.5).all() and (batch[0, :, :, 3:] == 0.0).all()
    assert (batch[1] == -1.0).all()


@pytest.mark.parametrize(
    "regions",
    [
        [],
        [np.zeros((1, 1, 4, 3), np.float32), np.zeros((1, 1, 5, 3), np.float32)],  # heights
        [np.zeros((1, 1, 4, 3), np.float32), np.zeros((1, 3, 4, 3), np.float32)],  # channels
        [np.zeros((2, 1, 4, 3), np.float32)],  # already a batch
        [np.zeros((1, 4, 3), np.float32)],
    ],
)
def test_regions_that_cannot_share_a_batch_are_refused(regions: list[np.ndarray]) -> None:
    with pytest.raises(InvalidArgument, match="stack_regions"):
        stack_regions(regions)


def test_the_recogniser_reads_a_stacked_frame_as_it_reads_its_lines_alone() -> None:
    pipe = load_pipeline("ppocr_v4_cascade", threads=1)
    frame = render_frame(0, "hard", "test", 1)
    bgr = frame.image[:, :, ::-1].copy()
    lines = pipe(bgr)["lines"][:6]
    xs = [region_input(bgr, ln.box, 48, 16, 960) for ln in lines]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    model = best_path_model(onnx.load(str(pipe.model_path("cloud_rec"))))
    rec = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    from common.pipeline import Cascade

    charset = Cascade(pipe, lambda x: None, 0.9).charset  # type: ignore[arg-type,return-value]
    alone = []
    for x in xs:
        best1, prob1 = rec.run(None, {"x": x})
        alone.append(ctc_best_path(best1[0], prob1[0], charset).text)
    batch, _ = stack_regions(xs)
    best, prob = rec.run(None, {"x": batch})
    stacked = [ctc_best_path(best[k], prob[k], charset).text for k in range(len(xs))]
    same = sum(a == b for a, b in zip(alone, stacked, strict=True))
    assert same >= len(xs) - 1, (alone, stacked)  # padding may change a character of one line
