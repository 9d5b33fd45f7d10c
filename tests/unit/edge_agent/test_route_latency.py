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


def test_the_collector_exports_a_snapshot_taken_on_the_agents_loop() -> None:
    import asyncio
    import threading
    from typing import Any

    from prometheus_client import CollectorRegistry, generate_latest

    from edge_agent._prometheus import AgentCollector

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    taken_on: list[threading.Thread] = []
    latency = RouteLatency()
    latency.observe("cloud", 0.02)

    class _Agent:
        async def metrics_snapshot(self) -> dict[str, Any]:
            taken_on.append(threading.current_thread())
            return {
                "routes": {"cloud": 1},
                "exits": {"": 1},
                "latency": latency.snapshot(),
                "bytes_sent": 1676,
                "cache": {"exact_hits": 0, "similar_hits": 0, "misses": 1},
                "telemetry": {"sent": 1, "dropped": 0},
                "connected": True,
                "bundle": {
                    "name": "b",
                    "version": "2",
                    "current": "b-2",
                    "checks": 3,
                    "swaps": 1,
                    "rejected": 1,
                    "refused": 0,
                    "rollbacks": 1,
                    "last_error": "",
                },
            }

    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(AgentCollector(_Agent(), loop))  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert taken_on == [thread]  # read on the agent's loop, not the scraping thread
    assert 'aiml021_edge_requests_total{route="cloud"} 1.0' in text
    assert 'aiml021_edge_requests_total{route="deferred"} 0.0' in text
    assert 'aiml021_edge_exit_answers_total{exit="cloud"} 1.0' in text
    assert 'aiml021_edge_request_duration_seconds_bucket{le="0.025",route="cloud"} 1.0' in text
    assert 'aiml021_edge_bundle_events_total{event="rollbacks"} 1.0' in text
    assert 'aiml021_edge_bundle_info{name="b",version="2"} 1.0' in text
    assert "aiml021_edge_replay_backlog" not in text  # no replay queue configured
