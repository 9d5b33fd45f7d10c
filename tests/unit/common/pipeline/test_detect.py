"""Detector steps on synthetic probability maps: sizes, boxes, unclip, corner and reading order."""

from __future__ import annotations

import numpy as np
import pytest

from common.pipeline._detect import (
    db_boxes,
    det_preprocess,
    order_corners,
    reading_order,
    target_size,
    unclip,
)


def test_a_1280x720_frame_becomes_736x1312_for_the_detector() -> None:
    assert target_size(720, 1280, 736) == (736, 1312)
    assert target_size(800, 1000, 736) == (800, 992)  # already large enough: only rounded to 32
    assert target_size(2000, 1000, 960, limit="max") == (960, 480)
    with pytest.raises(ValueError, match="limit"):
        target_size(10, 10, 32, limit="both")


def test_preprocessing_scales_pixels_to_minus_one_one_in_nchw() -> None:
    image = np.zeros((50, 100, 3), np.uint8)
    image[..., 2] = 255
    x = det_preprocess(None, image, short_side=64)  # type: ignore[arg-type]
    assert x.shape == (1, 3, 64, 128) and x.dtype == np.float32  # 50x100 -> 64x128
    assert np.allclose(x[0, 0], -1.0) and np.allclose(x[0, 2], 1.0)


def test_two_rectangles_in_the_probability_map_become_two_boxes_in_frame_pixels() -> None:
    prob = np.zeros((1, 1, 64, 128), np.float32)
    prob[0, 0, 10:18, 60:120] = 0.9  # second in reading order: right of the first, same row
    prob[0, 0, 10:18, 8:40] = 0.8
    prob[0, 0, 40:41, 8:40] = 0.9  # one pixel high: too thin to be text
    image = np.zeros((128, 256, 3), np.uint8)  # twice the map's size
    boxes, scores = db_boxes(None, prob, image)  # type: ignore[arg-type]
    assert boxes.shape == (2, 4, 2)
    left, right = boxes
    assert left[0, 0] < 16 and 80 <= left[1, 0] <= 90  # x 8..40 in the map -> 16..80, unclipped
    assert right[0, 0] < 120 < 240 <= right[1, 0]
    assert left[0, 1] < 20 < 36 < left[3, 1]  # y 10..18 -> 20..36, grown on both sides
    # mean probability inside each fitted rectangle, whose one-pixel rim (dilation) is empty
    assert 0.6 < scores[0] < 0.8 and 0.7 < scores[1] < 0.9 and scores[0] < scores[1]


def test_boxes_scoring_below_box_thresh_are_dropped() -> None:
    prob = np.zeros((1, 1, 32, 64), np.float32)
    prob[0, 0, 8:16, 8:56] = 0.4  # above thresh 0.3 (a region) but below box_thresh 0.5
    boxes, _ = db_boxes(None, prob, np.zeros((32, 64, 3), np.uint8))  # type: ignore[arg-type]
    assert boxes.shape == (0, 4, 2)


def test_unclip_grows_a_square_by_area_times_ratio_over_perimeter() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    grown = unclip(square, 1.6)  # distance 100 * 1.6 / 40 = 4
    assert grown[:, 0].min() == pytest.approx(-4, abs=0.6)
    assert grown[:, 1].max() == pytest.approx(14, abs=0.6)


def test_corners_are_ordered_top_left_clockwise() -> None:
    quad = np.array([[10, 5], [0, 0], [0, 5], [10, 0]], np.float32)
    assert order_corners(quad).tolist() == [[0, 0], [10, 0], [10, 5], [0, 5]]


def test_reading_order_is_rows_then_left_to_right_within_a_row() -> None:
    def box(x: float, y: float) -> np.ndarray:
        return np.array([[x, y], [x + 5, y], [x + 5, y + 3], [x, y + 3]], np.float32)

    ordered = reading_order(np.stack([box(50, 40), box(60, 2), box(0, 8), box(0, 30)]))
    assert [tuple(b[0]) for b in ordered] == [(0, 8), (60, 2), (0, 30), (50, 40)]
