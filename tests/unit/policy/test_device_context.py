"""What a device tells a policy about itself: its compute share (a quarter-core device takes four
times as long) and the compute queued ahead of a request, and objective-priced cut selection for
a workload whose raw input is large (a camera frame: send it whole, or run the device's model and
send the few parts it is unsure of)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from common.errors import InvalidArgument
from policy import (
    INPUT_CUT,
    Action,
    AdaptiveCutSelector,
    BundleProfile,
    CodecCost,
    CutPointCost,
    DecisionContext,
    ExitCost,
    Featurizer,
    HeuristicPolicy,
    LatencyModel,
    NetworkScenario,
    ObjectiveWeights,
    SimConfig,
    Simulator,
    synthetic_trace,
)
from policy._types import Decision, Outcome

WEIGHTS = ObjectiveWeights(cloud_per_ms=0.001)
DEADLINE = 1500.0


def frame_profile() -> BundleProfile:
    """A camera frame: nothing run at ``camera``; ``local`` is a 400 ms model on the profiling
    core. The input is a 68 KB JPEG read by a 500 ms cloud pipeline; after the local model, the
    parts it doubts are 15 KB and 150 ms of cloud time."""
    return BundleProfile(
        "frame",
        (ExitCost("camera", 0.0, threshold=1.0), ExitCost("local", 400.0, threshold=0.9)),
        (
            CutPointCost(INPUT_CUT, -1, 500.0, {"jpeg": CodecCost(68_000)}),
            CutPointCost("parts", 1, 150.0, {"q4": CodecCost(15_000)}),
        ),
    )


def heuristic() -> HeuristicPolicy:
    p = frame_profile()
    model = LatencyModel(p, edge_slowdown=1.0, load_gain=0.0)
    return HeuristicPolicy(p, latency_model=model, weights=WEIGHTS, hysteresis=0.0)


def before_local(share: float, mbps: float, rtt: float = 50.0, queue: float = 0.0) -> Decision:
    ctx = DecisionContext(
        exit_index=0, confidences=(0.0,), rtt_ms=rtt, bandwidth_mbps=mbps,
        deadline_ms=DEADLINE, compute_share=share, queue_ms=queue,
    )  # fmt: skip
    return heuristic().decide(ctx)


@pytest.mark.parametrize(
    ("field", "value"), [("compute_share", 0.0), ("compute_share", -1.0), ("compute_share", math.nan),
                         ("queue_ms", -5.0), ("queue_ms", math.nan)],
)  # fmt: skip
def test_a_context_with_no_compute_or_a_negative_queue_is_rejected(
    field: str, value: float
) -> None:
    with pytest.raises(InvalidArgument, match=field):
        DecisionContext(**{field: value})  # type: ignore[arg-type]


def test_local_compute_scales_with_the_inverse_of_the_share() -> None:
    model = LatencyModel(frame_profile(), edge_slowdown=1.0, load_gain=0.0)
    assert model.local_ms(-1, 1) == pytest.approx(400.0)
    assert model.local_ms(-1, 1, share=0.25) == pytest.approx(1600.0)


def test_queue_delays_local_work_but_not_an_input_offload() -> None:
    sel = AdaptiveCutSelector(LatencyModel(frame_profile(), edge_slowdown=1.0, load_gain=0.0))
    base = sel.predict("parts", "q4", 1, 50.0, 10.0, 0.0)
    assert sel.predict("parts", "q4", 1, 50.0, 10.0, 0.0, 1.0, 700.0) == pytest.approx(base + 700)
    frame = sel.predict(INPUT_CUT, "jpeg", -1, 50.0, 10.0, 0.0)
    assert sel.predict(INPUT_CUT, "jpeg", -1, 50.0, 10.0, 0.0, 1.0, 700.0) == pytest.approx(frame)


def test_a_phone_core_reads_the_frame_itself_and_a_quarter_core_sends_it() -> None:
    # on 4G the phone's 0.4 s model and 15 KB of parts cost less than a 68 KB frame and 0.5 s
    # of cloud; a quarter-core device would take 1.6 s, past the 1.5 s deadline
    assert before_local(1.0, 10.0).action is Action.CONTINUE_LOCAL
    d = before_local(0.25, 10.0)
    assert (d.action, d.cut_point) == (Action.OFFLOAD, INPUT_CUT)


def test_the_quarter_core_keeps_its_frames_when_the_link_is_too_slow_for_them() -> None:
    assert before_local(0.25, 10.0).action is Action.OFFLOAD
    assert before_local(0.25, 0.25, rtt=200.0).action is Action.CONTINUE_LOCAL


def test_a_queue_on_the_device_sends_the_next_frame_to_the_cloud() -> None:
    assert before_local(1.0, 10.0, queue=0.0).action is Action.CONTINUE_LOCAL
    assert before_local(1.0, 10.0, queue=1500.0).action is Action.OFFLOAD


def test_without_weights_the_selector_still_minimises_latency_alone() -> None:
    p = frame_profile()
    plain = HeuristicPolicy(p, latency_model=LatencyModel(p, edge_slowdown=1.0, load_gain=0.0))
    ctx = DecisionContext(exit_index=0, confidences=(0.0,), rtt_ms=50.0, bandwidth_mbps=10.0,
                          deadline_ms=DEADLINE)  # fmt: skip
    # the frame (0.6 s) is faster than the phone's own model plus parts (0.62 s): latency says send
    assert plain.decide(ctx).action is Action.OFFLOAD


def test_after_the_local_model_a_doubtful_part_goes_even_past_the_deadline() -> None:
    h = heuristic()
    late = DecisionContext(exit_index=1, confidences=(0.0, 0.4), rtt_ms=50.0, bandwidth_mbps=10.0,
                           deadline_ms=DEADLINE, elapsed_ms=2000.0, compute_share=0.25)  # fmt: skip
    assert h.decide(late).cut_point == "parts"
    sure = DecisionContext(exit_index=1, confidences=(0.0, 0.95), rtt_ms=50.0,
                           bandwidth_mbps=10.0, deadline_ms=DEADLINE)  # fmt: skip
    assert h.decide(sure).action is Action.EXIT_LOCAL
    down = DecisionContext(exit_index=1, confidences=(0.0, 0.4), bandwidth_mbps=0.0,
                           deadline_ms=DEADLINE)  # fmt: skip
    assert h.decide(down).action is Action.DEFER


def test_the_features_carry_share_and_queue() -> None:
    f = Featurizer(2)
    slow = f(DecisionContext(compute_share=0.25, queue_ms=50.0, deadline_ms=100.0))
    fast = f(DecisionContext())
    assert f.dim == slow.shape[0] == fast.shape[0]
    assert slow[-2] == pytest.approx(-0.5) and fast[-2] == 0.0
    assert slow[-1] == pytest.approx(0.5) and fast[-1] == 0.0


class _Recorder(HeuristicPolicy):
    seen: list[DecisionContext]

    def update(self, outcome: Outcome) -> None:
        self.seen.append(outcome.context)


def test_the_simulator_charges_the_share_and_shows_it_to_the_policy() -> None:
    trace = synthetic_trace(200, seed=1)
    net = NetworkScenario("steady", bandwidth_mbps=10.0, rtt_ms=20.0)
    lat = {}
    for share in (1.0, 0.25):
        sim = Simulator(trace, net, SimConfig(edge_slowdown=1.0, load_gain=0.0,
                                              compute_share=share, deadline_ms=1e6))  # fmt: skip
        pol = _Recorder(trace.profile, thresholds=[0.0, 0.0, 0.0], latency_model=sim.model)
        pol.seen = []
        res = sim.run(pol, sim.environment(0))
        assert {c.compute_share for c in pol.seen} == {share}
        lat[share] = float(np.mean(res.latency_ms))
    assert lat[0.25] == pytest.approx(4 * lat[1.0])
