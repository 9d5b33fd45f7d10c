"""The agent's latency histogram behind its Prometheus endpoint."""

from __future__ import annotations

from edge_agent._telemetry import LATENCY_BUCKETS_S, RouteLatency


def test_each_answer_falls_in_the_first_bucket_that_holds_it() -> None:
    h = RouteLatency()
    for seconds in (0.0005, 0.001, 0.0011, 0.3, 99.0):
        h.observe("edge", seconds)
    h.observe("cloud", 0.02)
    snap = h.snapshot()
    assert list(snap) == ["cloud", "edge"]  # one row per route, in a stable order
    counts, total = snap["edge"]
    assert len(counts) == len(LATENCY_BUCKETS_S) + 1
    assert counts[0] == 2  # 0.5 ms and exactly 1 ms: the le="0.001" bucket holds both
    assert counts[1] == 1  # 1.1 ms
    assert counts[LATENCY_BUCKETS_S.index(0.5)] == 1  # 300 ms
    assert counts[-1] == 1  # over every bound: only +Inf holds it
    assert sum(counts) == 5 and abs(total - (0.0005 + 0.001 + 0.0011 + 0.3 + 99.0)) < 1e-9
    assert sum(snap["cloud"][0]) == 1
    # a snapshot is a copy: later answers do not change it
    h.observe("edge", 0.3)
    assert sum(counts) == 5
