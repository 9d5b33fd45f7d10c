"""``aiml021_gateway_queued_requests`` (the queue-depth signal deploy/k8s's KEDA trigger scales
on) counts requests waiting in the batcher queues of the process, and drops back when they run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
from inference import grpc_service_pb2 as kpb
from inference import grpc_service_pb2_grpc as kgrpc

from tests.support.gateway import VECTOR_MODEL, gateway_models, running_gateway


def _request(i: int) -> kpb.ModelInferRequest:
    req = kpb.ModelInferRequest(model_name=VECTOR_MODEL, id=f"q{i}")
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.full((1, 4), i, np.float32).tobytes())
    return req


def _queued(registry: object) -> float:
    value = registry.get_sample_value("aiml021_gateway_queued_requests")  # type: ignore[attr-defined]
    return float(value)


async def test_queued_requests_follow_the_batcher_queues(tmp_path: Path) -> None:
    models = gateway_models(tmp_path / "models")
    batching = {"max_batch_size": 1, "workers": 2}
    async with running_gateway(models, hold=True, batching=batching) as live:
        registry = live.gateway.metrics.registry
        assert _queued(registry) == 0
        async with grpc.aio.insecure_channel(live.address) as ch:
            stub = kgrpc.GRPCInferenceServiceStub(ch)
            calls = [asyncio.ensure_future(stub.ModelInfer(_request(i))) for i in range(6)]
            for _ in range(200):  # each worker holds a batch of 1 in the backend, the rest wait
                if _queued(registry) == 4:
                    break
                await asyncio.sleep(0.02)
            assert _queued(registry) == 4
            live.backend.release()
            answers = await asyncio.gather(*calls)
        assert len(answers) == 6 and _queued(registry) == 0
