"""accounting.steer_offload: PolicyService (over a real grpc.aio server) decides OFFLOAD for a
device whose organisation is within budget, and keeps it local once the organisation has spent
its budget for the period."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc

from cloud._metrics import GatewayMetrics
from cloud.core import InferenceRequest, InferenceResult
from cloud.core._costs import Budget, CostAccountant, OrgDirectory, Prices
from cloud.grpc._policy import PolicyServicer
from cloud.grpc._policy_converters import context_to_proto
from edge_agent import EdgeAgent, EdgeSettings, Route
from policy import DecisionContext, HeuristicPolicy, OnlineLearner, synthetic_profile
from tests.support.edge_bundle import images
from tests.support.gateway import BUNDLE, running_gateway
from tests.support.ports import free_port


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


async def test_a_spent_budget_refuses_the_orgs_session_offloads(
    gateway_models_dir: Path,
) -> None:
    # Devices deciding on their own (the pushed policy) are steered too: the gateway refuses the
    # offloads of an org that has spent its budget, so the agent answers with its best local exit;
    # another org's device is still served by the cloud.
    accounting = {
        "steer_offload": True,
        "devices": {"cam-acme": "acme", "cam-globex": "globex"},
        "budgets": {"acme": {"amount": 0.0}, "globex": {"amount": 1000.0}},
    }
    port = free_port()
    async with running_gateway(gateway_models_dir, port, accounting=accounting) as gw:

        def settings(device: str) -> EdgeSettings:
            base: dict[str, Any] = dict(
                bundle=gateway_models_dir / BUNDLE,  # exits never confident: every image offloads
                gateway=f"127.0.0.1:{port}",
                device_id=device,
                tls={"insecure": True},
                cache={"entries": 0},
            )
            return EdgeSettings(**base)

        async with (
            EdgeAgent(settings("cam-acme")) as acme,
            EdgeAgent(settings("cam-globex")) as globex,
        ):
            assert await acme.wait_connected(10) and await globex.wait_connected(10)
            spent = [await acme.infer(im) for im in images(3)]
            served = [await globex.infer(im) for im in images(3, seed=5)]
        assert [r.route for r in spent] == [Route.EDGE_FALLBACK] * 3
        assert all(r.top_class >= 0 and r.exit_index >= 0 for r in spent)  # answered on the device
        assert [r.route for r in served] == [Route.CLOUD] * 3
        assert sum(gw.computations().values()) == 3  # only globex's requests were computed
