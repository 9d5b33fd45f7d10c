"""The OCR hybrid's decisions (benchmarks/ocr/decide.py): contexts in per-line units, the frame
profile with a camera exit before v4, and what the objective-priced heuristic chooses per device
class and link."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.ocr.decide import (
    FRAME_DEADLINE_MS,
    Contexts,
    LineCosts,
    frame_trace,
    line_profile,
    make_decider,
)
from policy import (
    INPUT_CUT,
    Action,
    BundleProfile,
    CodecCost,
    CutPointCost,
    ExitCost,
    Trace,
    dumps_state,
)

COSTS = LineCosts()


def test_contexts_divide_every_time_by_the_lines_of_a_frame_and_keep_the_bandwidth() -> None:
    cx = Contexts(10.0, 0.25, "iot")
    ctx = cx.line(0.4, rtt_ms=50.0, bandwidth_mbps=8.0, elapsed_ms=2000.0)
    assert (ctx.rtt_ms, ctx.elapsed_ms, ctx.deadline_ms) == (5.0, 200.0, FRAME_DEADLINE_MS / 10)
    assert ctx.bandwidth_mbps == 8.0 and ctx.compute_share == 0.25 and ctx.exit_index == 1
    assert ctx.confidences == (0.0, 0.4)
    frame = cx.frame(rtt_ms=50.0, bandwidth_mbps=8.0, queue_ms=1000.0)
    assert frame.exit_index == 0 and frame.queue_ms == 100.0 and frame.confidence == 0.0


def test_the_frame_trace_puts_an_always_wrong_camera_exit_before_v4() -> None:
    one = BundleProfile(
        "v4",
        (ExitCost("v4", 37.0),),
        (CutPointCost(INPUT_CUT, -1, 46.0, {"jpeg": CodecCost(6000)}),
         CutPointCost("region", 0, 12.0, {"q4|zstd": CodecCost(1500)})),
    )  # fmt: skip
    n = 5
    trace = Trace(
        one, np.full((n, 1), 0.8, np.float32), np.zeros((n, 1), np.float32),
        np.ones((n, 1), bool), np.ones((n, 2), bool),
        ((INPUT_CUT, "jpeg"), ("region", "q4|zstd")),
    )  # fmt: skip
    t = frame_trace(trace, line_profile(COSTS))
    assert t.profile.n_exits == 2 and t.confidences.shape == (n, 2)
    assert (t.confidences[:, 0] == 0).all() and not t.correct[:, 0].any()
    assert t.correct[:, 1].all() and (t.cloud_correct == trace.cloud_correct).all()


@pytest.mark.parametrize(
    ("share", "mbps", "rtt", "want"),
    [(1.0, 10.0, 50.0, Action.CONTINUE_LOCAL), (0.25, 10.0, 50.0, Action.OFFLOAD),
     (0.25, 1.0, 150.0, Action.OFFLOAD), (0.25, 0.25, 200.0, Action.CONTINUE_LOCAL)],
)  # fmt: skip
def test_the_heuristic_sends_a_frame_whole_only_from_a_slow_device_on_a_usable_link(
    share: float, mbps: float, rtt: float, want: Action
) -> None:
    h = make_decider("heuristic", line_profile(COSTS))
    d = h.decide(Contexts(COSTS.lines_per_frame, share, "x").frame(rtt, mbps, 0.0))
    assert d.action is want
    if want is Action.OFFLOAD:
        assert d.cut_point == INPUT_CUT


def test_a_learned_decider_comes_back_from_its_state() -> None:
    profile = line_profile(COSTS)
    fresh = make_decider("linucb", profile)
    back = make_decider("linucb", profile, json.loads(dumps_state(fresh)))
    ctx = Contexts(COSTS.lines_per_frame, 1.0, "phone").line(0.3, 50.0, 10.0, 500.0)
    assert back.decide(ctx).arm == fresh.decide(ctx).arm


def test_with_the_detector_alone_first_every_class_sends_the_regions_of_a_hard_frame() -> None:
    # on hard frames v4 doubts 90% of lines: once the boxes are known, reading them on the
    # device costs more than it saves; the quarter core no longer needs to send the JPEG
    profile = line_profile(COSTS, det=True)
    assert [e.name for e in profile.exits] == ["camera", "det", "v4"]
    for share in (1.0, 0.25):
        h = make_decider("heuristic", profile)
        cx = Contexts(COSTS.lines_per_frame, share, "x", det=True)
        assert h.decide(cx.frame(50.0, 10.0, 0.0)).action is Action.CONTINUE_LOCAL
        d = h.decide(cx.detected(50.0, 10.0, 120.0 / share))
        assert (d.action, d.cut_point) == (Action.OFFLOAD, "boxes")
        line = cx.line(0.5, 50.0, 10.0, 400.0)
        assert line.exit_index == 2 and line.confidences == (0.0, 0.0, 0.5)
