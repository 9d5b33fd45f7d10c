"""Adaptive cut selection: switching points as bandwidth changes, and hysteresis."""

from __future__ import annotations

import pytest

from policy import (
    INPUT_CUT,
    AdaptiveCutSelector,
    BundleProfile,
    CodecCost,
    CutPointCost,
    ExitCost,
    LatencyModel,
)


@pytest.fixture
def model() -> LatencyModel:
    # Raw input is big but needs no device compute; cut2 is small but needs two segments.
    profile = BundleProfile(
        "m",
        (ExitCost("e1", 1.0), ExitCost("e2", 1.0), ExitCost("final", 1.0)),
        (
            CutPointCost(INPUT_CUT, -1, 0.0, {"raw": CodecCost(10_000)}),
            CutPointCost(
                "cut2", 1, 0.0, {"q4": CodecCost(1_000), "lossy": CodecCost(10, accuracy_drop=3.0)}
            ),
        ),
    )
    return LatencyModel(profile, edge_slowdown=1.0, cloud_queue_ms=0.0)


def test_switch_point_is_where_predicted_latencies_cross(model: LatencyModel) -> None:
    sel = AdaptiveCutSelector(model, hysteresis=0.0)
    # input: 80 / bw ms; cut2: 2 + 8 / bw ms  -> equal at bw = 36 Mbit/s
    assert sel.best(0.0, 100.0).cut_point == INPUT_CUT  # type: ignore[union-attr]
    assert sel.best(0.0, 30.0).cut_point == "cut2"  # type: ignore[union-attr]
    assert sel.best(0.0, 37.0).cut_point == INPUT_CUT  # type: ignore[union-attr]
    assert sel.best(0.0, 35.0).cut_point == "cut2"  # type: ignore[union-attr]


def test_accuracy_budget_excludes_lossy_codecs(model: LatencyModel) -> None:
    sel = AdaptiveCutSelector(model, accuracy_budget=0.5)
    assert all(sel.best(0.0, bw).codec != "lossy" for bw in (0.1, 1.0, 100.0))  # type: ignore[union-attr]
    loose = AdaptiveCutSelector(model, accuracy_budget=5.0)
    assert loose.best(0.0, 0.1).codec == "lossy"  # type: ignore[union-attr]


def test_hysteresis_holds_the_choice_near_the_switch_point(model: LatencyModel) -> None:
    sel = AdaptiveCutSelector(model, hysteresis=0.2)
    assert sel.select(0.0, 100.0).cut_point == INPUT_CUT  # type: ignore[union-attr]
    # just below the 36 Mbit/s crossing the gain is < 20%: stay on the raw input
    for bw in (35.0, 33.0, 36.5, 34.0):
        assert sel.select(0.0, bw).cut_point == INPUT_CUT  # type: ignore[union-attr]
    assert sel.switches == 0
    # well below, cut2 is >20% faster: switch once, then hold on the way back up
    assert sel.select(0.0, 10.0).cut_point == "cut2"  # type: ignore[union-attr]
    assert sel.select(0.0, 40.0).cut_point == "cut2"  # type: ignore[union-attr]
    assert sel.switches == 1
    assert sel.select(0.0, 200.0).cut_point == INPUT_CUT  # type: ignore[union-attr]
    assert sel.switches == 2


def test_without_candidates_there_is_no_choice() -> None:
    profile = BundleProfile(
        "m",
        (ExitCost("e", 1.0),),
        (CutPointCost(INPUT_CUT, -1, 0.0, {"x": CodecCost(1, accuracy_drop=9.0)}),),
    )
    sel = AdaptiveCutSelector(LatencyModel(profile), accuracy_budget=0.5)
    assert sel.select(10.0, 10.0) is None
