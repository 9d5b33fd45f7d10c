"""profile_from_manifest: the one manifest -> BundleProfile builder (gateway, edge, traces)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.bundle import Manifest, parse_manifest
from common.errors import InvalidArgument
from policy import (
    DISABLED_EXIT_THRESHOLD,
    INPUT_CUT,
    CodecCost,
    CutPointCost,
    HeuristicPolicy,
    profile_from_manifest,
)

MANIFEST = Path(__file__).resolve().parents[3] / "models" / "fmnist_branchy" / "manifest.json"


def _data() -> dict[str, Any]:
    return json.loads(MANIFEST.read_text())


def _manifest(**changes: Any) -> Manifest:
    data = _data()
    data.update(changes)
    return parse_manifest(data)


def test_without_measurements_every_segment_counts_the_default() -> None:
    m = _manifest()
    p = profile_from_manifest(m)
    assert p.model == m.name
    assert [e.name for e in p.exits] == ["exit1", "exit2", "final"]
    assert [e.segment_ms for e in p.exits] == [1.0, 1.0, 1.0]
    assert [e.threshold for e in p.exits] == [x.threshold for x in m.exits]
    assert [e.temperature for e in p.exits] == [x.temperature for x in m.exits]
    cut1, cut2 = p.cuts
    # cut1 sits after stage1 (exit1's segment), cut2 after stage2: two and one segments remain.
    assert (cut1.name, cut1.after_exit, cut1.tail_ms) == ("cut1", 0, 2.0)
    assert (cut2.name, cut2.after_exit, cut2.tail_ms) == ("cut2", 1, 1.0)
    assert cut1.codecs == {"raw": CodecCost(bytes=m.cut_points[0].float32_bytes)}


def test_measured_times_codecs_and_extra_cuts_are_used() -> None:
    m = _manifest()
    p = profile_from_manifest(
        m,
        segment_ms={"stage1": 0.5, "stage2": 0.25, "stage3": 2.0},
        tail_ms={"cut2": 7.0},
        codecs={"cut1": {"q4|ans": CodecCost(bytes=1676, encode_ms=0.1)}},
        extra_cuts=(CutPointCost(INPUT_CUT, -1, 3.0, {"raw": CodecCost(784)}),),
        model="fmnist_branchy:1.0.0",
    )
    assert p.model == "fmnist_branchy:1.0.0"
    assert [e.segment_ms for e in p.exits] == [0.5, 0.25, 2.0]
    assert [c.name for c in p.cuts] == [INPUT_CUT, "cut1", "cut2"]
    assert p.cut("cut1").tail_ms == 2.25  # measured stage2 + stage3
    assert p.cut("cut1").codecs == {"q4|ans": CodecCost(bytes=1676, encode_ms=0.1)}
    assert p.cut("cut2").tail_ms == 7.0
    assert HeuristicPolicy(p).thresholds == [e.threshold for e in p.exits]


def test_a_disabled_exit_never_answers_on_confidence() -> None:
    data = _data()
    data["exits"][0]["threshold"] = None
    p = profile_from_manifest(parse_manifest(data))
    assert p.exits[0].threshold == DISABLED_EXIT_THRESHOLD > 1.0


def test_an_exit_off_the_edge_chain_is_named() -> None:
    data = _data()
    data["edge_chain"] = ["stage1", "stage2"]  # a head-only device: the final exit is cloud-side
    with pytest.raises(InvalidArgument, match="exit final runs on 'stage3'"):
        profile_from_manifest(parse_manifest(data))
