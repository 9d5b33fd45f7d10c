"""PolicyService over a real grpc.aio server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc
from google.protobuf import duration_pb2

from cloud.grpc._policy import PolicyServicer, add_to_server
from cloud.grpc._policy_converters import context_to_proto
from policy import DecisionContext, LinUCBPolicy, dumps_state, policy_from_state, synthetic_profile


@pytest.fixture
async def served() -> AsyncIterator[tuple[policy_pb2_grpc.PolicyServiceStub, PolicyServicer]]:
    server = grpc.aio.server()
    servicer = add_to_server(server, LinUCBPolicy(synthetic_profile(), seed=0))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield policy_pb2_grpc.PolicyServiceStub(channel), servicer
    finally:
        await server.stop(None)


def request(conf: float = 0.4) -> policy_pb2.DecideRequest:
    ctx = DecisionContext(
        exit_index=0, confidences=(conf,), bandwidth_mbps=20.0, rtt_ms=10.0, deadline_ms=100.0
    )
    return policy_pb2.DecideRequest(context=context_to_proto(ctx, model_name="m"))


async def test_decide_report_outcome_and_get_policy(served) -> None:  # type: ignore[no-untyped-def]
    stub, servicer = served
    resp = await stub.Decide(request())
    d = resp.decision
    assert d.action != policy_pb2.ACTION_UNSPECIFIED
    assert d.decision_id and d.policy_id == "linucb" and 0 < d.propensity <= 1
    outcome = policy_pb2.Outcome(
        decision_id=d.decision_id,
        correct=True,
        latency=duration_pb2.Duration(nanos=30_000_000),
        deadline_met=True,
        bytes_sent=1000,
        cloud_cost=0.1,
    )
    unknown = policy_pb2.Outcome(decision_id="nope")
    ack = await stub.ReportOutcome(policy_pb2.ReportOutcomeRequest(outcomes=[outcome, unknown]))
    assert ack.accepted == 1
    assert servicer.policy.counts.sum() == 1  # type: ignore[attr-defined]
    again = await stub.ReportOutcome(policy_pb2.ReportOutcomeRequest(outcomes=[outcome]))
    assert again.accepted == 0  # each decision learns once
    snap = (await stub.GetPolicy(policy_pb2.GetPolicyRequest(device_id="d"))).policy
    assert snap.kind == "linucb" and snap.policy_id == "linucb"
    clone = policy_from_state(snap.state)
    assert dumps_state(clone) == dumps_state(servicer.policy)


async def test_bad_context_is_invalid_argument(served) -> None:  # type: ignore[no-untyped-def]
    stub, _ = served
    bad = request()
    bad.context.exit_confidences.append(0.5)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Decide(bad)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exit_confidences" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Decide(policy_pb2.DecideRequest())
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
