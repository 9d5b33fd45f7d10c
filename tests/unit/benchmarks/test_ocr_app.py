"""The OCR application's pieces: scoring against ground truth, the static policy's frame rule,
camera-like arrivals, the CPU-share throttle and the gray recogniser served to devices."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks.ocr.app import Answer, Policy, Throttle, score
from benchmarks.ocr.device import arrivals
from benchmarks.ocr.fleet import gray_input
from common.frames import render_frame
from common.pipeline import best_path_model, load_pipeline, region_input

BOX = [[10, 10], [110, 10], [110, 30], [10, 30]]
OTHER = [[10, 100], [110, 100], [110, 130], [10, 130]]


def test_score_counts_exact_lines_and_matching_characters() -> None:
    truth = [{"text": "P/N 73-55", "box": BOX}, {"text": "Lot 42", "box": OTHER}]
    answers = [Answer("P/N 73-5S", BOX, "region", 0.9), Answer("Lot 42", OTHER, "edge", 0.99)]
    s = score(answers, truth)
    assert (s["lines"], s["exact"], s["chars"], s["chars_correct"]) == (2, 1, 15, 14)
    assert (s["route_region"], s["route_edge"], s["route_frame"]) == (1, 1, 0)


def test_score_a_line_read_somewhere_else_is_not_correct() -> None:
    truth = [{"text": "Lot 42", "box": BOX}]
    s = score([Answer("Lot 42", OTHER, "edge", 1.0)], truth)
    assert (s["exact"], s["chars_correct"]) == (0, 0)
    assert score([], truth)["exact"] == 0


def test_policy_sends_whole_frames_only_when_most_lines_are_doubtful_on_a_fast_link() -> None:
    p = Policy(frame_share=0.8, frame_min_mbit=5.0)
    assert p.frame_route(9, 10, 10.0)
    assert not p.frame_route(7, 10, 10.0)
    assert not p.frame_route(9, 10, 1.0)  # 3G: regions instead
    assert not p.frame_route(0, 0, 1000.0)
    assert not Policy().frame_route(10, 10, 1000.0)  # the default never sends frames


def test_arrivals_are_deterministic_ordered_and_bursty() -> None:
    a = arrivals(40, 3.0, 0.3, seed=7)
    assert a == arrivals(40, 3.0, 0.3, seed=7)
    assert len(a) == 40 and a == sorted(a)
    gaps = np.diff(a)
    assert np.isclose(gaps, 0.2).any(), "some frames come right behind another"
    assert arrivals(5, 3.0, 0.3, seed=8) != a[:5]


def test_throttle_reports_cpu_and_stretches_by_the_share() -> None:
    def spin() -> int:
        end = time.thread_time() + 0.02
        n = 0
        while time.thread_time() < end:
            n += 1
        return n

    out, cpu, wall = Throttle(0.25).run(spin)
    assert out > 0 and cpu >= 0.02
    assert wall >= cpu / 0.25  # never faster than the device class allows


@pytest.fixture(scope="module")
def recognisers() -> tuple[ort.InferenceSession, ort.InferenceSession]:
    v6 = load_pipeline("ppocr_v4_cascade").model_path("cloud_rec")
    best = best_path_model(onnx.load(str(v6)))
    gray = gray_input(best_path_model(onnx.load(str(v6))))

    def session(m: onnx.ModelProto) -> ort.InferenceSession:
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

    return session(best), session(gray)


def test_gray_model_reads_a_gray_region_like_the_rgb_model(recognisers) -> None:  # type: ignore[no-untyped-def]
    best, gray = recognisers
    frame = render_frame(0, "hard", "test", 1)
    bgr = frame.image[:, :, ::-1].copy()
    box = np.asarray(frame.lines[0].box, np.float32)
    x = region_input(bgr, box, 48, 16, 1280)
    g = (0.114 * x[:, :1] + 0.587 * x[:, 1:2] + 0.299 * x[:, 2:3]).astype(np.float32)
    # at the recogniser's height the gray model is the RGB model on the gray repeated
    want = best.run(None, {"x": np.repeat(g, 3, axis=1)})
    got = gray.run(None, {"x": g})
    for w, o in zip(want, got, strict=True):
        np.testing.assert_allclose(o, w, rtol=1e-5, atol=1e-5)
    # a lower region is scaled up in the graph: the answer has the 48-high region's steps
    small = region_input(bgr, box, 32, 8, 1280 * 32 // 48)
    gs = (0.114 * small[:, :1] + 0.587 * small[:, 1:2] + 0.299 * small[:, 2:3]).astype(np.float32)
    assert gray.run(None, {"x": gs})[0].shape[1] == pytest.approx(want[0].shape[1], abs=2)


def test_gray_model_refuses_a_three_channel_region(recognisers) -> None:  # type: ignore[no-untyped-def]
    _, gray = recognisers
    with pytest.raises(Exception, match=r"(?i)invalid|dimension|shape"):
        gray.run(None, {"x": np.zeros((1, 3, 32, 100), np.float32)})


def test_overlay_draws_each_line_in_its_route_colour(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from PIL import Image

    from benchmarks.ocr.demo import COLOURS, overlay

    frame = render_frame(0, "hard", "test", 1)
    src = tmp_path / "f.jpg"
    src.write_bytes(frame.encoded)
    answers = [
        {"text": "A", "edge_text": "A", "route": "edge", "box": [[100, 300], [300, 300], [300, 330], [100, 330]]},
        {"text": "B", "edge_text": "8", "route": "region", "box": [[700, 500], [900, 500], [900, 530], [700, 530]]},
    ]  # fmt: skip
    png = overlay(src, answers, tmp_path / "o" / "f.png")
    img = Image.open(png).convert("RGB")
    assert img.size == (1280, 720)
    assert img.getpixel((200, 300)) == COLOURS["edge"]
    assert img.getpixel((800, 500)) == COLOURS["region"]


def test_policy_trace_reads_every_line_three_ways() -> None:
    from benchmarks.ocr.policies import build_trace

    trace, cost = build_trace(1)
    assert len(trace) == cost["lines"] > 0
    assert trace.options == (("input", "jpeg"), ("region", "q4|zstd"))
    assert trace.cloud_correct.shape == (len(trace), 2)
    assert 0 < cost["region_bytes_per_line"] < cost["jpeg_bytes_per_line"]
    assert ((trace.confidences >= 0) & (trace.confidences <= 1)).all()
    # v6 reads the hard frame's lines at least as well as the device
    assert trace.cloud_correct[:, 1].sum() >= trace.correct[:, 0].sum()


def test_emulated_latency_queues_device_link_and_cloud() -> None:
    from benchmarks.ocr.fleet import emulate

    link = {"rtt_ms": 100.0, "bandwidth_mbit": 1.0}

    def frame(at: float, cpu: float, sent: int, ms: float, **routes: int) -> dict[str, Any]:
        return {"arrival_s": at, "device_cpu_s": cpu, "bytes_up": sent, "cloud_ms": ms, **routes}

    phone: dict[str, Any] = {"system": "hybrid", "share": 1.0,
             "frames": [frame(0.0, 0.5, 125_000, 0, route_region=4), frame(0.1, 0.5, 0, 0)]}  # fmt: skip
    iot: dict[str, Any] = {
        "system": "hybrid",
        "share": 0.25,
        "frames": [frame(0.0, 0.5, 12_500, 0, route_region=1)],
    }
    emulate([phone, iot], link, region_ms=100.0)
    a, b = phone["frames"]
    # 0.5 s on the device, 1 s on the 1 Mbit/s uplink, 50 ms each way, 4 regions of 100 ms
    assert a["emulated_latency_s"] == pytest.approx(0.5 + 1.0 + 0.05 + 0.4 + 0.05)
    # the next frame waits for the device, then needs nothing from the cloud
    assert b["emulated_latency_s"] == pytest.approx(1.0 - 0.1)
    # the IoT device needs 2 s for the same CPU work; the gateway is free again by then
    (c,) = iot["frames"]
    assert c["emulated_latency_s"] == pytest.approx(2.0 + 0.1 + 0.05 + 0.1 + 0.05)
