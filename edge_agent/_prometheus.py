"""The agent's own Prometheus endpoint: what the device did, for a Prometheus that can reach it
(a kiosk, a gateway-side fleet box, a test), next to the telemetry it sends to the gateway.

Nothing here counts on the request path: a scrape reads the agent's counters as they are
(:meth:`EdgeAgent.metrics` and ``AgentStats.latency``), so the endpoint costs nothing between
scrapes. Every label value comes from a closed set (the routes, the bundle's exit names), never
from a caller. Off by default; when on it listens on loopback unless ``metrics.host`` says
otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edge_agent._telemetry import LATENCY_BUCKETS_S
from edge_agent._types import Route

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from edge_agent._agent import EdgeAgent


def _latency(latency: dict[str, tuple[list[int], float]]) -> HistogramMetricFamily:
    h = HistogramMetricFamily(
        "aiml021_edge_request_duration_seconds",
        "Time from infer() to the answer on the device, by where it was answered.",
        labels=["route"],
    )
    for route, (counts, total) in latency.items():
        cumulative, buckets = 0, []
        for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        h.add_metric([route], buckets, total)
    return h


SCRAPE_TIMEOUT_S = 5.0
"""Longest a scrape waits for the agent's loop to take the snapshot."""


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class AgentCollector(Collector):
    """Reads ``agent``'s counters at each scrape."""

    def __init__(self, agent: EdgeAgent, loop: asyncio.AbstractEventLoop) -> None:
        self.agent = agent
        self.loop = loop

    def collect(self) -> Iterator[Metric]:
        # Read on the agent's loop (its counters change there; the replay queue is counted on
        # its own thread), not on the HTTP server's thread.
        snapshot = asyncio.run_coroutine_threadsafe(self.agent.metrics_snapshot(), self.loop)
        snap: dict[str, Any] = snapshot.result(timeout=SCRAPE_TIMEOUT_S)
        routes = CounterMetricFamily(
            "aiml021_edge_requests", "Requests answered by the agent, by route.", labels=["route"]
        )
        for route in Route:
            routes.add_metric([route.value], snap["routes"].get(route.value, 0))
        yield routes
        exits = CounterMetricFamily(
            "aiml021_edge_exit_answers",
            "Answers per exit of the bundle (the exit that answered, on the device or after it).",
            labels=["exit"],
        )
        for name, n in sorted(snap["exits"].items()):
            exits.add_metric([name or "cloud"], n)
        yield exits
        yield _latency(snap["latency"])
        yield _counter(
            "aiml021_edge_offload_bytes",
            "Payload bytes offloaded to the gateway.",
            snap["bytes_sent"],
        )
        cache = snap["cache"]
        lookups = CounterMetricFamily(
            "aiml021_edge_cache_lookups", "Result-cache lookups by outcome.", labels=["outcome"]
        )
        lookups.add_metric(["exact_hit"], cache["exact_hits"])
        lookups.add_metric(["similar_hit"], cache["similar_hits"])
        lookups.add_metric(["miss"], cache["misses"])
        yield lookups
        tele = snap["telemetry"]
        yield _counter("aiml021_edge_telemetry_sent", "Telemetry events sent.", tele["sent"])
        yield _counter(
            "aiml021_edge_telemetry_dropped",
            "Telemetry events dropped (buffer full while disconnected).",
            tele["dropped"],
        )
        yield _gauge(
            "aiml021_edge_connected", "1 while the session stream is open.", int(snap["connected"])
        )
        stream = snap.get("stream")
        if stream is not None:
            yield _counter("aiml021_edge_sessions", "Session streams opened.", stream["sessions"])
            yield _counter(
                "aiml021_edge_connect_failures",
                "Failed attempts to open the session stream.",
                stream["connect_failures"],
            )
            net = snap["network"]
            yield _gauge(
                "aiml021_edge_network_rtt_seconds", "Measured round-trip time.", net["rtt_ms"] / 1e3
            )
            yield _gauge(
                "aiml021_edge_network_bandwidth_bits_per_second",
                "Estimated uplink bandwidth.",
                net["bandwidth_bps"],
            )
        replay = snap.get("replay")
        if replay is not None:
            yield _gauge(
                "aiml021_edge_replay_backlog",
                "Requests waiting in the replay queue for the cloud's refinement.",
                snap["replay_backlog"],
            )
            outcomes = CounterMetricFamily(
                "aiml021_edge_replay",
                "Replay queue outcomes (queued, delivered, expired, lost, ...).",
                labels=["outcome"],
            )
            for outcome, n in sorted(replay.items()):
                outcomes.add_metric([outcome], n)
            yield outcomes
        bundle = GaugeMetricFamily(
            "aiml021_edge_bundle_info",
            "The bundle the agent runs (value 1).",
            labels=["name", "version"],
        )
        bundle.add_metric([snap["bundle"]["name"], str(snap["bundle"]["version"])], 1)
        yield bundle
        if "swaps" in snap["bundle"]:  # following the device class's assignment ([artifacts])
            follow = CounterMetricFamily(
                "aiml021_edge_bundle_events",
                "Following the bundle assignment: checks, swaps, bundles rejected before use, "
                "refused by the gateway, rolled back after failing in service.",
                labels=["event"],
            )
            for event in ("checks", "swaps", "rejected", "refused", "rollbacks"):
                follow.add_metric([event], snap["bundle"][event])
            yield follow


class MetricsEndpoint:
    """``/metrics`` for one agent on ``host:port`` (0: a free port, see :attr:`port`)."""

    def __init__(
        self, agent: EdgeAgent, loop: asyncio.AbstractEventLoop, host: str, port: int
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(AgentCollector(agent, loop))
        server, thread = start_http_server(port, host, registry=self.registry)
        self._server: WSGIServer = server
        self._thread = thread
        self.port: int = server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


__all__ = ["AgentCollector", "MetricsEndpoint"]
