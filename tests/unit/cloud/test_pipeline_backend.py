"""Pipelines served as models: image limits read from headers, KServe BYTES inputs, the tensors a
pipeline answers with, and width buckets in the batcher (line crops of different widths from
many devices in one batch)."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Mapping

import cv2
import numpy as np
import pytest

from cloud.backends._pipeline import decode_image, image_size, lines_to_tensors
from cloud.batching import BatcherConfig, DynamicBatcher
from cloud.core import ModelKey, bytes_input
from common.errors import InvalidArgument, ResourceExhausted
from common.pipeline import Line


def _jpeg(width: int, height: int) -> bytes:
    ok, enc = cv2.imencode(".jpg", np.full((height, width, 3), 200, np.uint8))
    assert ok
    return enc.tobytes()


def test_image_size_reads_the_header_and_applies_the_limits() -> None:
    data = _jpeg(64, 32)
    assert image_size(data, 1 << 20, 64 * 32) == (64, 32)
    with pytest.raises(ResourceExhausted, match="max_image_pixels"):
        image_size(data, 1 << 20, 64 * 32 - 1)
    with pytest.raises(ResourceExhausted, match="max_image_bytes"):
        image_size(data, len(data) - 1, 1 << 30)
    with pytest.raises(InvalidArgument, match="not an encoded image"):
        image_size(b"\x00" * 100, 1 << 20, 1 << 30)
    with pytest.raises(InvalidArgument, match="not an encoded image"):
        image_size(data[:20], 1 << 20, 1 << 30)  # header cut short


def test_decode_image_gives_the_bgr_frame() -> None:
    bgr = decode_image(_jpeg(40, 24), 1 << 20, 1 << 20)
    assert bgr.shape == (24, 40, 3) and bgr.dtype == np.uint8


def test_a_raw_frame_goes_as_ppm_at_the_cost_of_a_copy() -> None:
    bgr = (np.arange(30 * 40 * 3) % 251).astype(np.uint8).reshape(30, 40, 3)
    ppm = b"P6\n40 30\n255\n" + bgr[:, :, ::-1].tobytes()
    np.testing.assert_array_equal(decode_image(ppm, 1 << 20, 1 << 20), bgr)


def test_a_bytes_tensor_of_one_element_becomes_its_bytes() -> None:
    raw = struct.pack("<I", 3) + b"abc"
    np.testing.assert_array_equal(bytes_input("image", [1], raw), [[97, 98, 99]])
    np.testing.assert_array_equal(bytes_input("image", [1, 1], raw), [[97, 98, 99]])
    with pytest.raises(InvalidArgument, match="one element"):
        bytes_input("image", [2], raw + raw)
    with pytest.raises(InvalidArgument, match="declares 4 bytes but 3 follow"):
        bytes_input("image", [1], struct.pack("<I", 4) + b"abc")
    with pytest.raises(InvalidArgument, match="4-byte length"):
        bytes_input("image", [1], b"ab")


def test_lines_become_json_boxes_confidences_and_padded_text() -> None:
    box = [[1.0, 2.0], [3.0, 2.0], [3.0, 4.0], [1.0, 4.0]]
    out = lines_to_tensors([Line("Ab", 0.9, 0.95, box), Line("Größe", 0.5, 0.6, box)])
    assert json.loads(out["lines"].tobytes())[1]["text"] == "Größe"
    assert out["boxes"].shape == (1, 2, 4, 2) and out["confidence"].shape == (1, 2)
    assert out["text"].shape == (1, 2, len("Größe".encode()))
    assert bytes(out["text"][0, 0]).rstrip(b"\0") == b"Ab"
    empty = lines_to_tensors([])
    assert empty["boxes"].shape == (1, 0, 4, 2) and json.loads(empty["lines"].tobytes()) == []


class _Widths:
    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    async def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        x = feeds["x"]
        self.shapes.append(x.shape)
        return {"width": (x[:, 0, 0] != 0).sum(axis=-1, keepdims=True).astype(np.float32)}


def _crop(width: int) -> dict[str, np.ndarray]:
    return {"x": np.ones((1, 1, 4, width), np.float32)}


async def test_crops_in_one_width_bucket_batch_padded_to_the_widest() -> None:
    run = _Widths()
    cfg = BatcherConfig(max_batch_size=8, max_queue_delay_s=0.05, width_bucket=64)
    b = DynamicBatcher(ModelKey("rec", "1"), run, cfg)
    b.start()
    widths = [100, 120, 70, 200, 130]  # buckets 2, 2, 2, 4, 3
    futs = [b.submit(_crop(w), 1, flow=f"device-{i}") for i, w in enumerate(widths)]
    results = await asyncio.gather(*futs)
    assert sorted(run.shapes) == [(1, 1, 4, 130), (1, 1, 4, 200), (3, 1, 4, 120)]
    # each request's own pixels, zeros to the right
    assert [float(r.outputs["width"][0, 0]) for r in results] == widths
    assert [r.batch_size for r in results] == [3, 3, 3, 1, 1]
    assert b.input_elements == 4 * sum(widths)
    assert b.computed_elements == 4 * (3 * 120 + 200 + 130)
    await b.close()


async def test_without_a_width_bucket_only_equal_shapes_batch() -> None:
    run = _Widths()
    b = DynamicBatcher(
        ModelKey("rec", "1"), run, BatcherConfig(max_batch_size=8, max_queue_delay_s=0.05)
    )
    b.start()
    await asyncio.gather(
        *(b.submit(_crop(w), 1, flow=f"d{w}-{i}") for i, w in enumerate((100, 120, 100)))
    )
    assert sorted(run.shapes) == [(1, 1, 4, 120), (2, 1, 4, 100)]
    assert b.computed_elements == b.input_elements
    await b.close()
