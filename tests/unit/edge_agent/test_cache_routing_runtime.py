"""Cache, calibration maths and the head runtime (the fallback rule: tests/unit/policy)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from common.bundle import load_bundle
from common.confidence import softmax
from edge_agent import (
    CachedAnswer,
    EdgeRuntime,
    ResultCache,
    content_key,
    entropy,
)
from edge_agent._netstats import NetStats
from tests.support.edge_bundle import images

A = CachedAnswer(3, 0.9, 0, "exit1", "edge")


def test_cache_ttl_lru_and_metrics() -> None:
    now = [0.0]
    c = ResultCache(2, ttl_s=10, clock=lambda: now[0])
    c.put("a", A)
    c.put("b", A)
    assert c.get("a") == A  # a is now most recent
    c.put("c", A)  # evicts b
    assert c.get("b") is None and c.metrics.evictions == 1
    now[0] = 11
    assert c.get("a") is None and c.metrics.expired == 1
    c.miss()
    assert c.metrics.hit_rate == pytest.approx(1 / 2)


def test_cache_similarity_threshold() -> None:
    c = ResultCache(10, ttl_s=10, similarity=0.95)
    e = np.array([1.0, 0.0, 0.0], np.float32)
    c.put("a", A, e)
    assert c.get_similar(np.array([0.99, 0.141, 0.0], np.float32)) == A
    assert c.get_similar(np.array([0.0, 1.0, 0.0], np.float32)) is None
    assert c.get_similar(np.ones(4, np.float32)) is None  # other embedding size
    assert c.metrics.similar_hits == 1
    assert ResultCache(0, 1).enabled is False


def test_content_key_depends_on_bytes_shape_and_dtype() -> None:
    x = np.zeros((2, 2), np.uint8)
    assert content_key(x) == content_key(x.copy())
    assert content_key(x) != content_key(x.reshape(4))
    assert content_key(x) != content_key(x.astype(np.float32))


def test_calibration_maths() -> None:
    logits = np.array([2.0, 1.0, 0.0])
    p1, p2 = softmax(logits, 1.0), softmax(logits, 2.0)
    assert p1.sum() == pytest.approx(1.0) and p2.max() < p1.max()  # T > 1 softens
    assert entropy(np.array([1.0, 0.0])) == 0.0
    assert entropy(np.full(4, 0.25)) == pytest.approx(np.log(4))


def test_runtime_runs_chain_and_exits(bundle_dir: Path) -> None:
    rt = EdgeRuntime(load_bundle(bundle_dir))
    st = rt.start(rt.prepare(images(1)[0]))
    first = rt.step(st)
    assert [e.name for e in first] == ["exit1"] and not first[0].confident
    assert [c.name for c in rt.available_cuts(st)] == ["cut1"]
    rt.run_to_end(st)
    assert rt.done(st) and [e.name for e in st.exits] == ["exit1", "exit2", "final"]
    emb = rt.embedding(st, "cut1")
    assert emb is not None and emb.shape == (4,) and np.linalg.norm(emb) == pytest.approx(1.0)
    assert rt.embedding(st, "nope") is None
    rt.set_thresholds({"exit1": 0.0, "unknown": 1.0})
    assert rt.thresholds["exit1"] == 0.0
    x = rt.prepare(images(1)[0])
    assert rt.prepare(x[0]).shape == x.shape  # float32 CHW accepted


def test_netstats_estimates() -> None:
    n = NetStats(rtt_s=0.02, bandwidth_bps=1e6)
    n.observe_rtt(0.01)
    n.observe_rtt(-1)
    assert n.rtt_s == 0.01 and n.rtt_samples == 1
    n.observe_transfer(100, 1.0, 0.0)  # too small to say anything
    n.observe_transfer(125_000, 1.01, 0.0)  # 1 Mbit in ~1 s
    assert n.bandwidth_bps == pytest.approx(1e6, rel=0.01)
