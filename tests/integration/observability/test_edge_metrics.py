"""Debian's Prometheus scrapes a real edge agent's own endpoint (``metrics.port``) while the
agent answers through a real gateway: what the device did reaches Prometheus directly, not only
through the telemetry the gateway aggregates."""

from __future__ import annotations

import asyncio
import collections
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from edge_agent import EdgeAgent, EdgeSettings
from tests.integration.observability._prometheus import Prometheus, run_prometheus
from tests.support.edge_bundle import images
from tests.support.gateway import BUNDLE, running_gateway
from tests.support.ports import free_port


async def _query(prom: Prometheus, expr: str) -> dict[str, float]:
    """``expr``'s series as {route or '': value} (the API call off the loop: the agent's
    endpoint reads its counters on this loop while Prometheus scrapes it)."""
    data = await asyncio.to_thread(prom.api, "query", query=expr)
    return {s["metric"].get("route", ""): float(s["value"][1]) for s in data["result"]}


async def _until(prom: Prometheus, expr: str, want: Any, timeout_s: float = 45.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    got: dict[str, float] = {}
    while loop.time() < deadline:
        got = await _query(prom, expr)
        if want(got):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"{expr}: {got}\n{prom.log.read_text()[-2000:]}")


@pytest.mark.timeout(180)
async def test_prometheus_scrapes_the_edge_agent(gateway_models_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    async with running_gateway(gateway_models_dir, port):
        settings = EdgeSettings(
            bundle=gateway_models_dir / BUNDLE,
            gateway=f"127.0.0.1:{port}",
            device_id="cam-1",
            tls={"insecure": True},
            cache={"entries": 0},
            metrics={"port": 0},
        )
        async with EdgeAgent(settings) as agent:
            assert agent.metrics_port is not None
            # loopback unless configured otherwise
            assert agent._metrics_endpoint is not None
            assert agent._metrics_endpoint._server.server_address[0] == "127.0.0.1"
            assert await agent.wait_connected(10)
            results = [await agent.infer(im) for im in images(8)]
            routes = collections.Counter(r.route.value for r in results)
            prom_dir = tmp_path / "prom"
            prom_dir.mkdir()
            target = f"127.0.0.1:{agent.metrics_port}"
            with run_prometheus(prom_dir, [], [], edge_targets=[target]) as prom:
                await _until(
                    prom, "sum(aiml021_edge_requests_total)", lambda g: g.get("") == len(results)
                )
                by_route = await _query(prom, "aiml021_edge_requests_total")
                assert {r: n for r, n in by_route.items() if n} == routes
                # every route is a series (a closed set), answered or not
                assert {"edge", "cloud", "edge_fallback", "cache", "deferred"} <= set(by_route)
                counts = await _query(prom, "aiml021_edge_request_duration_seconds_count")
                assert {r: n for r, n in counts.items() if n} == routes
                assert await _query(prom, "aiml021_edge_connected") == {"": 1.0}
                info = await asyncio.to_thread(prom.api, "query", query="aiml021_edge_bundle_info")
                (series,) = info["result"]
                assert series["metric"]["name"] == agent.bundle.name
                targets = (await asyncio.to_thread(prom.api, "targets"))["activeTargets"]
                assert [(t["labels"]["job"], t["health"]) for t in targets] == [
                    ("aiml021-edge", "up")
                ]
                # more answers are seen at the next scrape: the endpoint reads live counters
                more = [await agent.infer(im) for im in images(4, seed=3)]
                total = len(results) + len(more)
                await _until(prom, "sum(aiml021_edge_requests_total)", lambda g: g.get("") == total)


async def test_no_endpoint_unless_configured(gateway_models_dir: Path) -> None:
    settings = EdgeSettings(bundle=gateway_models_dir / BUNDLE)  # offline, defaults
    async with EdgeAgent(settings) as agent:
        await agent.infer(images(1)[0])
        assert agent.metrics_port is None and agent._metrics_endpoint is None


async def test_the_endpoint_closes_with_the_agent(gateway_models_dir: Path) -> None:
    settings = EdgeSettings(bundle=gateway_models_dir / BUNDLE, metrics={"port": 0})
    async with EdgeAgent(settings) as agent:
        result = await agent.infer(images(1)[0])
        port = agent.metrics_port
        body = await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")
        assert f'aiml021_edge_requests_total{{route="{result.route.value}"}} 1.0' in body
        assert "aiml021_edge_stream" not in body and "aiml021_edge_connected 0.0" in body
    with pytest.raises(OSError):
        await asyncio.to_thread(_get, f"http://127.0.0.1:{port}/metrics")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())
