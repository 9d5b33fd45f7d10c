"""tritonclient (unchanged, sync and aio) talks to a server built from our `inference` stubs.

The server runs in this process; tritonclient runs in a child process (see tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from tests.support.tritonclient import run_script

CHECKS = Path(__file__).with_name("_tritonclient_checks.py")
TensorMetadata = pb.ModelMetadataResponse.TensorMetadata


class MinimalInference(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: object
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: object
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelMetadataResponse:
        if request.name != "fmnist":
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name!r}")
        return pb.ModelMetadataResponse(
            name="fmnist",
            versions=["1"],
            platform="onnxruntime_onnx",
            inputs=[TensorMetadata(name="input", datatype="FP32", shape=[-1, 1, 28, 28])],
            outputs=[TensorMetadata(name="logits", datatype="FP32", shape=[-1, 10])],
        )


@pytest.fixture
async def url() -> AsyncIterator[str]:
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(MinimalInference(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(grace=None)


async def test_tritonclient_sync_and_aio(url: str) -> None:
    import asyncio

    # The child process blocks; keep serving meanwhile.
    result = await asyncio.to_thread(run_script, CHECKS, {"url": url})

    for mode in ("sync", "aio"):
        checks = result[mode]
        assert checks["live"] is True and checks["ready"] is True, mode
        meta = checks["metadata"]
        assert meta["name"] == "fmnist" and meta["versions"] == ["1"], mode
        assert meta["platform"] == "onnxruntime_onnx"
        assert meta["inputs"] == [
            {"name": "input", "datatype": "FP32", "shape": ["-1", "1", "28", "28"]}
        ]
        assert meta["outputs"][0]["name"] == "logits"
    assert result["sync"]["unknown"] == {
        "status": "StatusCode.NOT_FOUND",
        "message": "unknown model 'nope'",
    }
