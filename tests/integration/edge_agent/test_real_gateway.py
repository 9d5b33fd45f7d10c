"""The edge agent against the real gateway (cloud.Gateway, in-process) over mTLS with
certificates from common.auth, using the reference Fashion-MNIST bundle."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import write_dev_pki
from common.bundle import load_bundle
from common.data import load_fashion_mnist
from common.settings import nest
from edge_agent import EdgeAgent, EdgeSettings, Reconciliation, Route
from policy import FallbackPolicy, profile_from_manifest

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "models" / "fmnist_branchy"
DEVICE = "edge-it-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    write_dev_pki(d, [DEVICE], hosts=["localhost", "127.0.0.1"])
    return d


def _gateway(pki: Path, port: int = 0) -> Gateway:
    return Gateway(
        GatewaySettings(
            models_dir=ROOT / "models",
            server={"port": port},
            metrics={"port": None},
            tls={"dir": pki},
            drain_grace_s=2.0,
        )
    )


def _agent_settings(pki: Path, port: int, **kw: object) -> EdgeSettings:
    """Settings for the test device; ``kw`` overrides dotted keys (``"routing.codec"``)."""
    base: dict[str, object] = {
        "bundle": BUNDLE,
        "gateway": f"127.0.0.1:{port}",
        "tls.dir": pki,
        "device_id": DEVICE,
        "tls.server_name": "localhost",
        "session.backoff_initial_s": 0.05,
        "session.backoff_max_s": 0.3,
        "routing.sla_ms": 3000,
        "cache.entries": 0,
    }
    return EdgeSettings(**nest({**base, **kw}))


def _fallback() -> FallbackPolicy:
    """The agent's fallback rule as the only policy (its decisions are easy to predict)."""
    return FallbackPolicy(profile_from_manifest(load_bundle(BUNDLE).manifest))


def _test_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels = load_fashion_mnist("test")
    return images[:n], labels[:n]


async def test_offload_over_mtls_matches_local_final_exit(pki: Path) -> None:
    images, labels = _test_images(64)
    async with _gateway(pki) as gw:
        # Lossless features: the cut's default codec is lossy (2-bit), which may flip a few answers.
        settings = _agent_settings(pki, gw.port, **{"routing.codec": "raw"})
        async with EdgeAgent(settings, policy=_fallback()) as agent:
            assert await agent.wait_connected(10)
            agent.set_thresholds({"exit1": 1.0, "exit2": 1.0})  # never exit early
            results = await asyncio.gather(*(agent.infer(im) for im in images))
            assert {r.route for r in results} == {Route.CLOUD}
            for im, r in zip(images, results, strict=True):
                st = agent.runtime.start(agent.runtime.prepare(im))
                agent.runtime.run_to_end(st)
                assert r.top_class == st.exits[-1].top_class  # tail(head(x)) == full(x)
            acc = float(np.mean([r.top_class for r in results] == labels))
            assert acc > 0.8
            assert agent.metrics()["stream"]["sessions"] == 1
            # Features fit one chunk: they travelled inline, one frame per request.
            assert agent.metrics()["stream"]["inline_sent"] > 0


async def test_default_policy_mixes_local_exits_and_offloads(pki: Path) -> None:
    images, labels = _test_images(200)
    async with _gateway(pki) as gw:
        async with EdgeAgent(_agent_settings(pki, gw.port)) as agent:
            assert await agent.wait_connected(10)
            results = await asyncio.gather(*(agent.infer(im) for im in images))
    routes = {r.route for r in results}
    assert Route.EDGE in routes
    acc = float(np.mean(np.array([r.top_class for r in results]) == labels))
    assert acc > 0.85


async def test_replay_against_real_gateway_and_drain_on_stop(pki: Path, tmp_path: Path) -> None:
    images, _ = _test_images(300)
    async with _gateway(pki) as gw:
        port = gw.port
    # Gateway down: defer the requests the early exit is unsure about.
    reports: list[Reconciliation] = []
    replay = {"replay.path": tmp_path / "q" / "replay.db", "replay.key": os.urandom(32).hex()}
    settings = _agent_settings(pki, port, **replay)
    async with EdgeAgent(settings, policy=_fallback(), on_reconcile=reports.append) as agent:
        results = [await agent.infer(im, idempotency_key=f"r{i}") for i, im in enumerate(images)]
        deferred = [r for r in results if r.route is Route.DEFERRED]
        assert deferred, "some inputs should not be confident at exit1"
        async with _gateway(pki, port):
            for _ in range(500):
                if len([r for r in reports if r.status == "delivered"]) == len(deferred):
                    break
                await asyncio.sleep(0.02)
            delivered = [r for r in reports if r.status == "delivered"]
            assert sorted(r.idempotency_key for r in delivered) == sorted(
                r.idempotency_key for r in deferred
            )
            assert agent.metrics()["replay"]["delivered"] == len(deferred)
            # Gateway stop sends Drain; the agent reconnects to the next gateway on this port.
        async with _gateway(pki, port):
            assert await agent.wait_connected(10)
            assert agent.metrics()["stream"]["drains"] >= 1
