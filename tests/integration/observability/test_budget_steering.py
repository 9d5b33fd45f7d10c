"""accounting.steer_offload: PolicyService (over a real grpc.aio server) decides OFFLOAD for a
device whose organisation is within budget, and keeps it local once the organisation has spent
its budget for the period."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc

from cloud._metrics import GatewayMetrics
from cloud.core import InferenceRequest, InferenceResult
from cloud.core._costs import Budget, CostAccountant, OrgDirectory, Prices
from cloud.grpc._policy import PolicyServicer
from cloud.grpc._policy_converters import context_to_proto
from policy import DecisionContext, HeuristicPolicy, OnlineLearner, synthetic_profile


@pytest.fixture
async def served() -> AsyncIterator[tuple[policy_pb2_grpc.PolicyServiceStub, CostAccountant]]:
    metrics = GatewayMetrics()
    metrics.add_model("m")
    costs = CostAccountant(
        metrics,
        Prices(per_cpu_ms=1.0),
        directory=OrgDirectory(devices={"cam-acme": "acme", "cam-globex": "globex"}),
        budgets={"acme": Budget(5.0), "globex": Budget(1000.0)},
    )
    servicer = PolicyServicer(
        OnlineLearner(HeuristicPolicy(synthetic_profile())), budget_exhausted=costs.exhausted
    )
    server = grpc.aio.server()
    policy_pb2_grpc.add_PolicyServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield policy_pb2_grpc.PolicyServiceStub(channel), costs
    finally:
        await server.stop(None)


async def _action(stub: policy_pb2_grpc.PolicyServiceStub, device: str) -> int:
    ctx = DecisionContext(
        exit_index=0,
        confidences=(0.2,),
        bandwidth_mbps=50.0,
        rtt_ms=5.0,
        deadline_ms=500.0,
        device_id=device,
    )
    resp = await stub.Decide(policy_pb2.DecideRequest(context=context_to_proto(ctx, "m")))
    return int(resp.decision.action)


async def test_a_spent_budget_keeps_its_orgs_devices_local(served) -> None:  # type: ignore[no-untyped-def]
    stub, costs = served
    offload = policy_pb2.ACTION_OFFLOAD
    assert await _action(stub, "cam-acme") == offload
    request = InferenceRequest("m", "1", {"x": np.zeros((1, 4), np.float32)}, device_id="cam-acme")
    result = InferenceResult("m", "1", {"y": np.zeros((1, 1), np.float32)}, compute_s=0.003)
    for _ in range(2):  # 3 ms at 1 per ms: 6 of acme's 5
        costs.on_request(request, "OK", result)
    assert costs.exhausted("cam-acme")
    steered = await _action(stub, "cam-acme")
    assert steered != offload
    assert steered in (policy_pb2.ACTION_CONTINUE_LOCAL, policy_pb2.ACTION_EXIT_LOCAL)
    assert await _action(stub, "cam-globex") == offload  # another org is not affected
