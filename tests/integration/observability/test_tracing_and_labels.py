"""One offloaded request, edge agent to backend, against the real gateway over mTLS: its spans
form one trace (edge infer → edge offload → session request → batcher queue and backend compute),
its metrics carry the device's region, its access-log lines are JSON with a pseudonymous device,
and the device's telemetry brings its region, class and replay backlog to the gateway."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import write_dev_pki
from common.bundle import load_bundle
from common.data import load_slice
from common.settings import nest
from common.telemetry import configure_logging, configure_tracing, shutdown_tracing
from edge_agent import EdgeAgent, EdgeSettings, Route
from policy import FallbackPolicy, profile_from_manifest

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "models" / "fmnist_branchy"
DEVICE = "edge-trace-1"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing("aiml021-test", exporter=exporter)
    yield exporter
    shutdown_tracing()


@pytest.fixture
def access_lines() -> Iterator[io.StringIO]:
    out = io.StringIO()
    handler = configure_logging("json", stream=out, access=True)
    yield out
    logging.getLogger().removeHandler(handler)
    logging.getLogger("aiml021.access").setLevel(logging.NOTSET)


async def test_one_offload_is_one_trace_with_region_labels_and_json_access_lines(
    tmp_path: Path, spans: InMemorySpanExporter, access_lines: io.StringIO
) -> None:
    write_dev_pki(tmp_path, [DEVICE], hosts=["localhost", "127.0.0.1"])
    settings = GatewaySettings.model_validate(
        {
            "models_dir": ROOT / "models",
            "server": {"port": 0},
            "metrics": {"port": None},
            "tls": {"dir": tmp_path},
            "drain_grace_s": 1.0,
            "observability": {"regions": ["eu-west"], "region": "us-east"},
        }
    )
    images, _ = load_slice(ROOT / "models" / "data" / "fmnist_test_slice.npz")
    async with Gateway(settings) as gw:
        agent_settings = EdgeSettings(
            **nest(
                {
                    "bundle": BUNDLE,
                    "gateway": f"127.0.0.1:{gw.port}",
                    "tls.dir": tmp_path,
                    "tls.server_name": "localhost",
                    "device_id": DEVICE,
                    "device_class": "cam-v2",
                    "region": "eu-west",
                    "routing.sla_ms": 5000,
                    "cache.entries": 0,
                    "telemetry.interval_s": 0.05,
                }
            )
        )
        policy = FallbackPolicy(profile_from_manifest(load_bundle(BUNDLE).manifest))
        async with EdgeAgent(agent_settings, policy=policy) as agent:
            assert await agent.wait_connected(10)
            agent.set_thresholds({"exit1": 1.0, "exit2": 1.0})  # never exit early: offload
            result = await agent.infer(images[0])
            assert result.route is Route.CLOUD
            m = gw.metrics.registry
            deadline = time.monotonic() + 10
            labels = {"region": "eu-west", "device_class": "cam-v2"}
            while m.get_sample_value("aiml021_gateway_reporting_devices", labels) != 1:
                assert time.monotonic() < deadline, "no telemetry batch reached the gateway"
                await asyncio.sleep(0.05)
            assert m.get_sample_value("aiml021_gateway_device_replay_backlog_requests", labels) == 0

        cam = {"device_class": "cam-v2"}
        count = m.get_sample_value(
            "aiml021_gateway_request_duration_seconds_count",
            # the device's class from its request context labels its latency too
            {"model": "fmnist_branchy.cut1", "api": "session", "region": "eu-west", **cam},
        )
        assert count == 1
        expiry = m.get_sample_value(
            "aiml021_gateway_certificate_expiry_timestamp_seconds", {"cert": "server"}
        )
        cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
        assert expiry == cert.not_valid_after_utc.timestamp()

    finished = spans.get_finished_spans()
    by_name = {s.name: s for s in finished}
    chain = [
        "aiml021.edge.infer",
        "aiml021.edge.offload",
        "aiml021.session.request",
    ]
    for name in [*chain, "aiml021.batcher.queue", "aiml021.backend.compute"]:
        assert name in by_name, (name, sorted(by_name))
    trace_ids = {by_name[n].context.trace_id for n in by_name}
    assert len(trace_ids) == 1  # one request, one trace
    root = by_name["aiml021.edge.infer"]
    assert root.parent is None
    for parent, child in itertools.pairwise(chain):
        link = by_name[child].parent
        assert link is not None and link.span_id == by_name[parent].context.span_id

    def times(name: str) -> tuple[int, int]:
        start, end = by_name[name].start_time, by_name[name].end_time
        assert start is not None and end is not None
        return start, end

    request = by_name["aiml021.session.request"]
    for step in ("aiml021.batcher.queue", "aiml021.backend.compute"):
        link = by_name[step].parent
        assert link is not None and link.span_id == request.context.span_id
        start, end = times(step)
        assert times(request.name)[0] <= start <= end <= times(request.name)[1]
    assert times("aiml021.batcher.queue")[1] <= times("aiml021.backend.compute")[1]

    lines = [json.loads(line) for line in access_lines.getvalue().splitlines() if line]
    gateway_line = next(x for x in lines if x["logger"] == "aiml021.access" and "api" in x)
    assert gateway_line["request_id"] == result.request_id
    assert gateway_line["status"] == "OK" and gateway_line["route"] == "cloud"
    assert gateway_line["region"] == "eu-west"
    access = [x for x in lines if x["logger"] == "aiml021.access"]
    assert gateway_line["device"].startswith("dev_") and DEVICE not in json.dumps(access)
    assert gateway_line["trace_id"] == format(request.context.trace_id, "032x")
    edge_line = next(x for x in lines if x["logger"] == "aiml021.access" and "api" not in x)
    assert edge_line["route"] == "cloud" and edge_line["request_id"] == result.request_id
