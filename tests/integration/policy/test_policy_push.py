"""The gateway pushes the served policy over the session stream (Welcome, then every publish, per
device class, versioned) and the edge agent applies it: the real Gateway and EdgeAgent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.bundle import load_bundle
from edge_agent import EdgeAgent, EdgeSettings, Route
from policy import HeuristicPolicy, profile_from_manifest
from tests.support.edge_bundle import images, make_bundle


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_bundle(root / "edge", thresholds=(0.99, 0.99, 0.0))
    return root


@pytest.fixture
async def gateway(models: Path) -> AsyncIterator[Gateway]:
    profile = profile_from_manifest(load_bundle(models / "edge").manifest)
    served = HeuristicPolicy(profile, thresholds=[0.97, 0.96, 0.0])
    settings = GatewaySettings(
        models_dir=models, server={"port": 0}, metrics={"port": None}, tls={"insecure": True}
    )
    async with Gateway(settings, policy=served) as gw:
        yield gw


def _agent(models: Path, gw: Gateway, device_class: str) -> EdgeAgent:
    settings = EdgeSettings(
        bundle=models / "edge",
        gateway=f"127.0.0.1:{gw.port}",
        tls={"insecure": True},
        device_id=f"dev-{device_class}",
        device_class=device_class,
        cache={"entries": 0},
    )
    return EdgeAgent(settings)


async def _until(check: object, timeout_s: float = 5.0) -> bool:
    for _ in range(int(timeout_s / 0.01)):
        if check():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.01)
    return False


async def test_welcome_carries_the_served_policy_and_publishes_reach_the_agent(
    models: Path, gateway: Gateway
) -> None:
    async with _agent(models, gateway, "phone") as phone, _agent(models, gateway, "cam") as cam:
        assert await phone.wait_connected(10) and await cam.wait_connected(10)
        # Welcome: the served thresholds replace the bundle's (0.99) in runtime and policy.
        for agent in (phone, cam):
            assert agent.runtime.thresholds == {"exit1": 0.97, "exit2": 0.96, "final": 0.0}
            assert agent.policy.thresholds == [0.97, 0.96, 0.0]  # type: ignore[attr-defined]
        assert (await phone.infer(images(1)[0])).route is Route.CLOUD

        # A policy for the phone class only, with a new version: phones exit at once.
        profile = profile_from_manifest(load_bundle(models / "edge").manifest)
        snap = gateway.policies.publish(
            HeuristicPolicy(profile, thresholds=[0.0, 0.0, 0.0]), "phone"
        )
        assert snap.policy_version == 2 and snap.exit_thresholds["exit1"] == 0.0
        assert await _until(lambda: phone.runtime.thresholds["exit1"] == 0.0)
        assert phone.policy.thresholds == [0.0, 0.0, 0.0]  # type: ignore[attr-defined]
        assert (await phone.infer(images(1)[0])).route is Route.EDGE
        await asyncio.sleep(0.1)
        assert cam.runtime.thresholds["exit1"] == 0.97  # other classes keep the default

        # Republishing the default (next version) reaches the cam but not the phone.
        gateway.policies.publish(HeuristicPolicy(profile, thresholds=[0.5, 0.5, 0.0]))
        assert await _until(lambda: cam.runtime.thresholds["exit1"] == 0.5)
        await asyncio.sleep(0.1)
        assert phone.runtime.thresholds["exit1"] == 0.0


async def test_the_gateway_reads_the_offload_context_and_reports_decode_time(
    models: Path, gateway: Gateway
) -> None:
    async with _agent(models, gateway, "phone") as phone:
        assert await phone.wait_connected(10)
        result = await phone.infer(images(1)[0])
    assert result.route is Route.CLOUD
    # The answer's timing carries the gateway's decode time of the coded payload.
    assert result.timing.decode_ms > 0
    # The device's confidence when it offloaded, counted by model and device class: below the
    # served threshold of its exit (0.97 at exit1, 0.96 at exit2).
    labels = {"model": load_bundle(models / "edge").name, "device_class": "phone"}
    sample = gateway.metrics.registry.get_sample_value
    assert sample("aiml021_gateway_offload_exit_confidence_count", labels) == 1
    assert sample("aiml021_gateway_offload_exit_confidence_bucket", {**labels, "le": "0.99"}) == 1
