"""EdgeAgent end to end against the real gateway (in-process, real loopback sockets)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np
import pytest

from common.bundle import load_bundle
from common.errors import FailedPrecondition, InvalidArgument
from common.settings import nest
from edge_agent import EdgeAgent, EdgeSettings, Reconciliation, Route, SyncEdgeAgent
from policy import HeuristicPolicy, profile_from_manifest
from tests.support.edge_bundle import images
from tests.support.gateway import running_gateway
from tests.support.ports import free_port


def _settings(bundle: Path, port: int | None = None, **kw: object) -> EdgeSettings:
    """Settings for a test agent; ``kw`` overrides dotted keys (``"cache.entries"``)."""
    base: dict[str, object] = {
        "bundle": bundle,
        "tls.insecure": True,
        "gateway": f"127.0.0.1:{port}" if port else None,
        "session.backoff_initial_s": 0.02,
        "session.backoff_max_s": 0.2,
        "telemetry.interval_s": 0.05,
        "routing.sla_ms": 2000,
    }
    return EdgeSettings(**nest({**base, **kw}))


async def test_confident_exit_answers_locally_without_gateway(local_bundle_dir: Path) -> None:
    async with EdgeAgent(_settings(local_bundle_dir)) as agent:
        result = await agent.infer(images(1)[0])
    assert result.route is Route.EDGE and result.exit_index == 0 and result.exit_name == "exit1"
    assert result.label == f"class{result.top_class}"
    assert 0.0 < result.confidence <= 1.0 and result.bytes_sent == 0


async def test_unconfident_exit_offloads_and_cloud_answer_matches_full_model(
    bundle_dir: Path, gateway_models_dir: Path
) -> None:
    async with running_gateway(gateway_models_dir) as gw:
        async with EdgeAgent(_settings(bundle_dir, gw.port, **{"cache.entries": 0})) as agent:
            assert await agent.wait_connected(5)
            imgs = images(8)
            results = await asyncio.gather(*(agent.infer(im) for im in imgs))
            assert all(r.route is Route.CLOUD and r.exit_index == -1 for r in results)
            assert all(r.cut_point in ("cut1", "cut2") and r.bytes_sent > 0 for r in results)
            # The gateway ran tail_cut1 on our features: same class as the local final exit.
            for im, r in zip(imgs, results, strict=True):
                st = agent.runtime.start(agent.runtime.prepare(im))
                agent.runtime.run_to_end(st)
                assert st.exits[-1].top_class == r.top_class
            assert len(gw.frames.hellos) == 1 and len(gw.frames.headers) == 8
            await asyncio.sleep(0.3)
            assert len(gw.telemetry) == 8 and all(e.bytes_sent > 0 for e in gw.telemetry)
            m = agent.metrics()
            assert m["routes"] == {"cloud": 8} and m["stream"]["sent"] == 8


async def test_deadline_falls_back_to_best_local_answer_and_queues(
    bundle_dir: Path, gateway_models_dir: Path, tmp_path: Path, replay_key: str
) -> None:
    settings = {
        "routing.sla_ms": 150,
        "routing.defer_on_fallback": True,
        "replay.path": tmp_path / "q" / "replay.db",
        "replay.key": replay_key,
    }
    async with running_gateway(gateway_models_dir, hold=True) as gw:  # never answers in time
        async with EdgeAgent(_settings(bundle_dir, gw.port, **settings)) as agent:
            assert await agent.wait_connected(5)
            result = await agent.infer(images(1)[0])
            assert result.route is Route.EDGE_FALLBACK and result.queued
            assert result.exit_name == "final" and result.error and "deadline" in result.error
            assert result.timing.total_ms < 1000
            await asyncio.sleep(0.05)
            assert gw.frames.cancels == [gw.frames.headers[0].request_id]
            assert agent.replay is not None and len(agent.replay) == 1


async def test_offline_requests_are_deferred_then_replayed_exactly_once(
    bundle_dir: Path, gateway_models_dir: Path, tmp_path: Path, replay_key: str
) -> None:
    reports: list[Reconciliation] = []
    port = free_port()  # nothing listens yet: the agent starts offline
    settings = _settings(
        bundle_dir, port, **{"replay.path": tmp_path / "q" / "replay.db", "replay.key": replay_key}
    )
    async with EdgeAgent(settings, on_reconcile=reports.append) as agent:
        results = [await agent.infer(im, idempotency_key=f"k{i}") for i, im in enumerate(images(5))]
        assert all(r.route is Route.DEFERRED and r.queued for r in results)
        again = await agent.infer(images(5)[0], idempotency_key="k0")  # same key: suppressed
        assert again.route in (Route.CACHE, Route.DEFERRED)
        async with running_gateway(gateway_models_dir, port) as gw:
            for _ in range(200):
                if len([r for r in reports if r.status == "delivered"]) == 5:
                    break
                await asyncio.sleep(0.02)
            delivered = [r for r in reports if r.status == "delivered"]
            assert sorted(r.idempotency_key for r in delivered) == [f"k{i}" for i in range(5)]
            assert gw.computations() == {f"k{i}": 1 for i in range(5)}
            assert all(h.deferred for h in gw.frames.headers)
            assert {r.offload_reason for r in gw.records} == {"deferred"}
            m = agent.metrics()["replay"]
            assert m["queued"] == 5 and m["delivered"] == 5 and len(agent.replay or []) == 0


async def test_exact_and_similarity_cache_hits(bundle_dir: Path, gateway_models_dir: Path) -> None:
    async with running_gateway(gateway_models_dir) as gw:
        s = _settings(bundle_dir, gw.port, **{"cache.similarity": 0.999})
        async with EdgeAgent(s) as agent:
            assert await agent.wait_connected(5)
            img = images(1)[0]
            first = await agent.infer(img)
            second = await agent.infer(img)
            near = img.copy()
            near[0, 0] ^= 1  # one pixel differs: not exact, but the embedding is ~identical
            third = await agent.infer(near)
            assert first.route is Route.CLOUD
            assert second.route is Route.CACHE and second.top_class == first.top_class
            assert third.route is Route.CACHE and third.cache_hit
            c = agent.metrics()["cache"]
            assert c["exact_hits"] == 1 and c["similar_hits"] == 1 and c["hit_rate"] > 0
            assert len(gw.frames.headers) == 1


async def test_policy_update_changes_exit_thresholds(
    bundle_dir: Path, gateway_models_dir: Path
) -> None:
    async with running_gateway(gateway_models_dir) as gw:
        async with EdgeAgent(_settings(bundle_dir, gw.port, **{"cache.entries": 0})) as agent:
            assert await agent.wait_connected(5)
            assert (await agent.infer(images(1)[0])).route is Route.CLOUD
            # The gateway publishes a policy whose first exit always answers; the session
            # carries it to the agent as a PolicyUpdate.
            profile = profile_from_manifest(load_bundle(bundle_dir).manifest)
            gw.gateway.policies.publish(HeuristicPolicy(profile, thresholds=[0.0, 0.0, 0.0]))
            for _ in range(100):
                if agent.runtime.thresholds["exit1"] == 0.0:
                    break
                await asyncio.sleep(0.01)
            assert (await agent.infer(images(1)[0])).route is Route.EDGE


async def test_infer_before_start_and_missing_bundle_are_rejected(bundle_dir: Path) -> None:
    agent = EdgeAgent(_settings(bundle_dir))
    with pytest.raises(FailedPrecondition):
        await agent.infer(images(1)[0])
    with pytest.raises(InvalidArgument):
        EdgeAgent(EdgeSettings())
    with pytest.raises(InvalidArgument):
        agent.runtime.prepare(np.zeros((3, 3), dtype=np.int16))


def test_sync_wrapper(local_bundle_dir: Path) -> None:
    with SyncEdgeAgent(_settings(local_bundle_dir)) as agent:
        result = agent.infer(images(1)[0])
        assert result.route is Route.EDGE
        assert agent.metrics()["requests"] == 1
        assert not agent.wait_connected(0.01)


def test_sync_wrapper_that_cannot_start_leaves_no_loop_behind() -> None:
    # EdgeSettings() names no bundle: the agent refuses to start; its private loop thread and the
    # loop's self-pipe must be gone (a leaked loop surfaced as a ResourceWarning in a later test).
    before = {t.ident for t in threading.enumerate()}
    with pytest.raises(InvalidArgument):
        SyncEdgeAgent(EdgeSettings())
    leaked = [
        t for t in threading.enumerate() if t.ident not in before and t.name == "aiml021-edge"
    ]
    assert leaked == []
