"""observability.otlp_endpoint: the gateway exports its spans over OTLP/gRPC to a collector (a
real gRPC server speaking OpenTelemetry's TraceService here), and a ModelInfer call's W3C
traceparent metadata (a REST call's traceparent header) makes them children of the caller's
span."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from inference import grpc_service_pb2 as kpb
from inference import grpc_service_pb2_grpc as kgrpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.telemetry import configure_tracing, shutdown_tracing

ROOT = Path(__file__).resolve().parents[3]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[trace_pb2.Span] = []
        self.services: set[str] = set()

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for rs in request.resource_spans:
            for attr in rs.resource.attributes:
                if attr.key == "service.name":
                    self.services.add(attr.value.string_value)
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[_Collector, int]]:
    c = _Collector()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(c, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield c, port
    finally:
        await server.stop(None)


async def test_model_infer_spans_reach_the_collector_under_the_callers_trace(
    collector: tuple[_Collector, int],
) -> None:
    c, port = collector
    settings = GatewaySettings.model_validate(
        {
            "models_dir": ROOT / "models",
            "server": {"port": 0},
            "metrics": {"port": None},
            "tls": {"insecure": True},
            "drain_grace_s": 0.5,
            "observability": {
                "otlp_endpoint": f"127.0.0.1:{port}",
                "service_name": "gw-under-test",
            },
        }
    )
    async with Gateway(settings) as gw:
        spec = gw.dataplane.repository.resolve("fmnist_branchy")
        (inp,) = spec.inputs
        x = np.zeros((1, *inp.shape[1:]), np.float32)
        req = kpb.ModelInferRequest(model_name="fmnist_branchy", id="otlp-1")
        t = req.inputs.add(name=inp.name, datatype="FP32", shape=list(x.shape))
        del t
        req.raw_input_contents.append(x.tobytes())
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            await kgrpc.GRPCInferenceServiceStub(ch).ModelInfer(
                req, metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT}-01"),)
            )
            # a malformed traceparent starts a trace of its own instead of failing the call
            await kgrpc.GRPCInferenceServiceStub(ch).ModelInfer(
                req, metadata=(("traceparent", "00-zz-not-a-trace-01"),)
            )
    # the gateway's stop flushed its spans
    assert c.services == {"gw-under-test"}
    ours = [s for s in c.spans if s.trace_id.hex() == TRACE_ID]
    by_name = {s.name: s for s in ours}
    request = by_name["aiml021.gateway.request"]
    assert request.parent_span_id.hex() == PARENT
    for child in ("aiml021.batcher.queue", "aiml021.backend.compute"):
        assert by_name[child].parent_span_id == request.span_id
    others = [
        s for s in c.spans if s.name == "aiml021.gateway.request" and s.trace_id.hex() != TRACE_ID
    ]
    assert len(others) == 1 and not others[0].parent_span_id


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing("rest-test", exporter=exporter)
    yield exporter
    shutdown_tracing()


async def test_rest_infer_continues_the_traceparent_header(spans: InMemorySpanExporter) -> None:
    settings = GatewaySettings.model_validate(
        {
            "models_dir": ROOT / "models",
            "server": {"port": 0},
            "metrics": {"port": None},
            "rest": {"port": 0},
            "tls": {"insecure": True},
            "drain_grace_s": 0.5,
        }
    )
    body = {
        "id": "rest-1",
        "inputs": [
            {"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [0.0] * 784}
        ],
    }
    async with Gateway(settings) as gw:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.rest_port}") as client:
            r = await client.post(
                "/v2/models/fmnist_branchy/infer",
                json=body,
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01"},
            )
            assert r.status_code == 200, r.text
            huge = await client.post(
                "/v2/models/fmnist_branchy/infer",
                json=body,
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT}-01" + "0" * 4000},
            )
            assert huge.status_code == 200  # an oversized header is ignored, not an error
    requests = [s for s in spans.get_finished_spans() if s.name == "aiml021.gateway.request"]
    assert len(requests) == 2
    ours = [s for s in requests if format(s.context.trace_id, "032x") == TRACE_ID]
    assert len(ours) == 1 and ours[0].parent is not None
    assert format(ours[0].parent.span_id, "016x") == PARENT
