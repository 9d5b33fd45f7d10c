"""Drift seen by a real gateway: an edge agent offloads Fashion-MNIST frames through its real
head; once the camera turns (rotated, noised frames) the gateway's PSI of both signals rises
past the alert threshold, from the telemetry and offloaded features alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.bundle import load_bundle
from common.data import load_slice
from common.settings import nest
from edge_agent import EdgeAgent, EdgeSettings, Route
from policy import FallbackPolicy, profile_from_manifest

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "models" / "fmnist_branchy"
N = 200  # frames per phase: reference, stable, shifted (PSI sampling noise about 0.09)


def _shifted(images: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    rotated = np.rot90(images, k=1, axes=(1, 2)).astype(np.float64)
    return np.clip(rotated + rng.normal(0, 40, rotated.shape), 0, 255).astype(np.uint8)


def _psi(gw: Gateway, model: str, signal: str) -> float:
    value = gw.metrics.registry.get_sample_value(
        "aiml021_gateway_drift_psi", {"model": model, "region": "eu-west", "signal": signal}
    )
    return float("nan") if value is None else value


async def _send(agent: EdgeAgent, gw: Gateway, frames: np.ndarray, telemetry_before: float) -> None:
    for frame in frames:
        assert (await agent.infer(frame)).route is Route.CLOUD
    deadline = time.monotonic() + 20  # telemetry batches follow within interval_s
    while True:
        events = gw.metrics.registry.get_sample_value(
            "aiml021_gateway_telemetry_events_total", {"route": "cloud"}
        )
        if (events or 0) >= telemetry_before + len(frames):
            return
        assert time.monotonic() < deadline, "telemetry did not arrive"
        await asyncio.sleep(0.05)


async def test_a_turned_camera_raises_the_gateways_psi(tmp_path: Path) -> None:
    images, _ = load_slice(ROOT / "models" / "data" / "fmnist_test_slice.npz")
    images = images[np.random.default_rng(1).permutation(len(images))][: 3 * N]
    settings = GatewaySettings.model_validate(
        {
            "models_dir": ROOT / "models",
            "server": {"port": 0},
            "metrics": {"port": None},
            "tls": {"insecure": True},
            "drain_grace_s": 0.5,
            "cache": {"full_models": False, "tail_segments": False},
            "observability": {
                "regions": ["eu-west"],
                "drift": {"reference_size": N, "window_size": N, "every": 10},
            },
        }
    )
    async with Gateway(settings) as gw:
        agent_settings = EdgeSettings(
            **nest(
                {
                    "bundle": BUNDLE,
                    "gateway": f"127.0.0.1:{gw.port}",
                    "tls.insecure": True,
                    "device_id": "cam-drift",
                    "region": "eu-west",
                    "routing.sla_ms": 10_000,
                    "routing.codec": "raw",
                    "cache.entries": 0,
                    "telemetry.interval_s": 0.05,
                }
            )
        )
        policy = FallbackPolicy(profile_from_manifest(load_bundle(BUNDLE).manifest))
        async with EdgeAgent(agent_settings, policy=policy) as agent:
            assert await agent.wait_connected(10)
            agent.set_thresholds({"exit1": 1.0, "exit2": 1.0})  # offload every frame
            await _send(agent, gw, images[:N], 0)  # the reference windows
            await _send(agent, gw, images[N : 2 * N], N)  # the same camera
            stable = {s: _psi(gw, m, s) for m, s in (("fmnist_branchy", "exit_confidence"),
                                                      ("fmnist_branchy.cut1", "feature_rms"))}  # fmt: skip
            await _send(agent, gw, _shifted(images[2 * N :]), 2 * N)  # the camera turned
            shifted = {s: _psi(gw, m, s) for m, s in (("fmnist_branchy", "exit_confidence"),
                                                       ("fmnist_branchy.cut1", "feature_rms"))}  # fmt: skip
    for signal in ("exit_confidence", "feature_rms"):
        assert stable[signal] < 0.25, (signal, stable, shifted)
        assert shifted[signal] > 0.25 and shifted[signal] > 3 * stable[signal], (stable, shifted)
