"""The attacks of issue 14, tried as an ordinary device would (dev-b's valid certificate)
against a real gateway over mTLS: each fails with the right status, leaves a row in the
hash-chained audit log (SQLite, the chain verified afterwards), and the victim (dev-a) keeps
getting its own right answers.

dev-a and dev-a2 belong to org acme, dev-b to org globex; svc-globex is a globex service,
op-1 an acme operator, admin-1 an acme admin (tokens).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from aiml021.cache.v1 import cache_pb2, cache_pb2_grpc
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc
from aiml021.policy.v1 import policy_pb2, policy_pb2_grpc
from aiml021.telemetry.v1 import telemetry_pb2, telemetry_pb2_grpc
from google.protobuf import json_format
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from cloud.core import content_hash
from cloud.stores import AuditFilter, AuditLog, AuditRow, SqliteAuditBackend, audit_log, verify
from tests.support.authz import AuthzWorld, Identity
from tests.support.gateway import LiveGateway, gateway_models_dir, running_gateway

__all__ = ["gateway_models_dir"]  # fixture

KSERVE = "/inference.GRPCInferenceService/"


@dataclass
class Scene:
    live: LiveGateway
    world: AuthzWorld
    db: SqliteAuditBackend
    who: dict[str, Identity]
    channels: dict[str, grpc.aio.Channel]
    log: AuditLog

    def kserve(self, name: str) -> pb_grpc.GRPCInferenceServiceStub:
        return pb_grpc.GRPCInferenceServiceStub(self.channels[name])

    def md(self, name: str) -> tuple[tuple[str, str], ...]:
        return self.who[name].metadata()

    async def audit(self, **flt: str) -> list[AuditRow]:
        """Rows written so far (the log is flushed first)."""
        await self.log.flush()  # the gateway's sink may wrap it (privacy: pseudonyms, DLP)
        return await self.db.rows(AuditFilter(**flt))


@pytest.fixture
async def scene(tmp_path: Path, gateway_models_dir: Path) -> AsyncIterator[Scene]:
    world = AuthzWorld(tmp_path / "authz")
    who = {
        "dev-a": world.device("dev-a", "acme"),
        "dev-a2": world.device("dev-a2", "acme"),
        "dev-b": world.device("dev-b", "globex"),
        "svc-globex": world.client("svc-globex", "Service", "globex"),
        "op-1": world.client("op-1", "Operator", "acme"),
        "admin-1": world.client("admin-1", "Admin", "acme"),
    }
    url = f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    log = audit_log(url)
    await log.start()
    async with running_gateway(
        gateway_models_dir,
        tls_dir=world.tls_dir,
        authz=world.authz_section(),
        rest={"port": 0},
        cache={"full_models": True, "kserve": True},  # ModelInfer answers from the cache too
        audit=log,
    ) as live:
        channels = {name: world.channel(live.port, ident) for name, ident in who.items()}
        db = SqliteAuditBackend(tmp_path / "meta.sqlite3")
        try:
            yield Scene(live, world, db, who, channels, log)
        finally:
            for channel in channels.values():
                await channel.close()
    await log.stop()
    verdict = await verify(db)
    assert verdict.ok, verdict
    await db.close()


def _infer_request(x: np.ndarray, key: str = "") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=x.shape)],
        raw_input_contents=[x.astype(np.float32).tobytes()],
    )
    if key:
        req.parameters["idempotency_key"].string_param = key
    return req


def _answer(resp: pb.ModelInferResponse) -> float:
    return float(np.frombuffer(resp.raw_output_contents[0], np.float32)[0])


async def _infer(scene: Scene, name: str, x: np.ndarray, key: str = "") -> float:
    resp = await scene.kserve(name).ModelInfer(_infer_request(x, key), metadata=scene.md(name))
    return _answer(resp)


async def _refused(call: object, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    return str(info.value.details())


X1 = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)  # sum 10
X2 = np.array([[5.0, 5.0, 5.0, 5.0]], np.float32)  # sum 20


async def test_cache_poisoning_fails(scene: Scene) -> None:
    version = scene.live.gateway.dataplane.repository.resolve("m").version
    digest = content_hash({"x": X1})
    poison = cache_pb2.CacheEntry(
        outputs=[
            tensor_pb2.Tensor(
                name="y",
                dtype=tensor_pb2.DATA_TYPE_FLOAT32,
                shape=[1, 1],
                contents=np.array([[6.0]], np.float32).tobytes(),
            )
        ]
    )
    put = cache_pb2.PutRequest(model_name=f"m:{version}", content_hash=digest, entry=poison)
    # A device may not write the cache at all.
    stub = cache_pb2_grpc.CacheServiceStub(scene.channels["dev-b"])
    await _refused(stub.Put(put, metadata=scene.md("dev-b")), grpc.StatusCode.PERMISSION_DENIED)
    # A service of another org may, into its own org's namespace only.
    svc = cache_pb2_grpc.CacheServiceStub(scene.channels["svc-globex"])
    await svc.Put(put, metadata=scene.md("svc-globex"))
    # dev-a's inference is computed, not answered with the poison (10, not 6).
    assert await _infer(scene, "dev-a", X1) == 10.0
    assert await _infer(scene, "dev-a", X1) == 10.0  # now from acme's own cache entry
    rows = await scene.audit(action="CacheService/Put")
    assert [(r.principal, r.org, r.outcome) for r in rows] == [
        ("dev-b", "globex", "PERMISSION_DENIED"),
        ("svc-globex", "globex", "OK"),
    ]
    # The records name the real device, not ''.
    assert {r.device_id for r in scene.live.records if r.model_name == "m"} == {"dev-a"}


async def test_result_theft_fails(scene: Scene) -> None:
    version = scene.live.gateway.dataplane.repository.resolve("m").version
    assert await _infer(scene, "dev-a", X1) == 10.0  # cached under acme
    get = cache_pb2.GetRequest(model_name=f"m:{version}", content_hash=content_hash({"x": X1}))
    thief = cache_pb2_grpc.CacheServiceStub(scene.channels["dev-b"])
    assert not (await thief.Get(get, metadata=scene.md("dev-b"))).found
    # Within dev-a's org the entry is shared (same model, same input, same answer).
    peer = cache_pb2_grpc.CacheServiceStub(scene.channels["dev-a2"])
    assert (await peer.Get(get, metadata=scene.md("dev-a2"))).found
    # Idempotency: dev-b replaying dev-a's key gets its own computation, never dev-a's answer.
    assert await _infer(scene, "dev-a", X1, key="dev-a-key") == 10.0
    assert await _infer(scene, "dev-b", X2, key="dev-a-key") == 20.0


async def test_key_squatting_fails(scene: Scene) -> None:
    # dev-b learned dev-a's replay key and sends it first with another input.
    assert await _infer(scene, "dev-b", X2, key="replay-7") == 20.0
    # dev-a's replay is computed for dev-a (no FAILED_PRECONDITION, no stolen slot).
    assert await _infer(scene, "dev-a", X1, key="replay-7") == 10.0
    assert await _infer(scene, "dev-a", X1, key="replay-7") == 10.0  # its replay: stored
    # The same key with another payload, by its owner: a precise error.
    details = await _refused(
        scene.kserve("dev-a").ModelInfer(
            _infer_request(X2, key="replay-7"), metadata=scene.md("dev-a")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "already used with a different payload" in details


async def test_unload_by_a_device_fails_and_an_admin_s_is_audited(scene: Scene) -> None:
    unload = pb.RepositoryModelUnloadRequest(model_name="m")
    await _refused(
        scene.kserve("dev-b").RepositoryModelUnload(unload, metadata=scene.md("dev-b")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    await _refused(
        scene.kserve("op-1").RepositoryModelUnload(unload, metadata=scene.md("op-1")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    ready = pb.ModelReadyRequest(name="m")
    assert (await scene.kserve("dev-a").ModelReady(ready, metadata=scene.md("dev-a"))).ready
    await scene.kserve("admin-1").RepositoryModelUnload(unload, metadata=scene.md("admin-1"))
    assert not (await scene.kserve("dev-a").ModelReady(ready, metadata=scene.md("dev-a"))).ready
    rows = await scene.audit(action="RepositoryModelUnload")
    assert [(r.principal, r.role, r.resource, r.outcome) for r in rows] == [
        ("dev-b", "Device", "m", "PERMISSION_DENIED"),
        ("op-1", "Operator", "m", "PERMISSION_DENIED"),
        ("admin-1", "Admin", "m", "OK"),
    ]


async def test_rollout_by_a_device_fails(scene: Scene) -> None:
    request = deploy_pb2.SetRolloutRequest(
        rollout=deploy_pb2.Rollout(
            model_name="m",
            mode=deploy_pb2.ROLLOUT_MODE_NONE,
            state=deploy_pb2.ROLLOUT_STATE_PROMOTED,
        )
    )
    device = deploy_pb2_grpc.DeployServiceStub(scene.channels["dev-b"])
    await _refused(
        device.SetRollout(request, metadata=scene.md("dev-b")), grpc.StatusCode.PERMISSION_DENIED
    )
    operator = deploy_pb2_grpc.DeployServiceStub(scene.channels["op-1"])
    try:
        await operator.SetRollout(request, metadata=scene.md("op-1"))
        outcome = "OK"
    except grpc.aio.AioRpcError as exc:  # what the rollout says may be refused, not who sent it
        assert exc.code() not in (
            grpc.StatusCode.PERMISSION_DENIED,
            grpc.StatusCode.UNAUTHENTICATED,
        )
        outcome = exc.code().name
    rows = await scene.audit(action="SetRollout")
    assert [(r.principal, r.resource, r.outcome) for r in rows] == [
        ("dev-b", "m", "PERMISSION_DENIED"),
        ("op-1", "m", outcome),
    ]


async def test_report_outcome_by_a_device_fails(scene: Scene) -> None:
    request = policy_pb2.ReportOutcomeRequest(
        outcomes=[policy_pb2.Outcome(decision_id="d-1", correct=False)]
    )
    device = policy_pb2_grpc.PolicyServiceStub(scene.channels["dev-b"])
    await _refused(
        device.ReportOutcome(request, metadata=scene.md("dev-b")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    rows = await scene.audit(action="ReportOutcome")
    assert [(r.principal, r.outcome, r.resource) for r in rows] == [
        ("dev-b", "PERMISSION_DENIED", "1 outcome(s)")
    ]


async def test_the_same_attacks_over_rest(scene: Scene, tmp_path: Path) -> None:
    ctx = scene.world.ssl_context(scene.who["dev-b"], tmp_path / "rest")
    base = f"https://127.0.0.1:{scene.live.gateway.rest_port}"
    attempts: list[tuple[str, dict[str, object], str]] = [
        ("/v1/cache/put", {"modelName": "m:1", "contentHash": "0" * 64}, "/v1/cache/put"),
        ("/v1/deploy/canary", {"rollout": {"modelName": "m"}}, "/v1/deploy/canary"),
    ]
    served = {str(getattr(r, "path", "")) for r in scene.live.gateway.rest.app().routes}
    if "/v2/repository/models/{name}/unload" in served:  # the KServe repository extension
        attempts.append(
            ("/v2/repository/models/m/unload", {}, "/v2/repository/models/{name}/unload")
        )
    async with httpx.AsyncClient(verify=ctx, base_url=base, timeout=10) as client:
        for route, body, _ in attempts:
            r = await client.post(route, json=body)
            assert r.status_code == 403, (route, r.text)
            assert r.json()["code"] == "PERMISSION_DENIED"
        # The device's own inference over REST is allowed.
        r = await client.post(
            "/v2/models/m/infer",
            json={
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]
            },
        )
        assert r.status_code == 200, r.text
    rows = await scene.audit(principal="dev-b", outcome="PERMISSION_DENIED")
    assert [r.action for r in rows] == [f"POST {template}" for _, _, template in attempts]
    # Whatever REST records is under the certificate's device id, never ''.
    assert all(r.device_id == "dev-b" for r in scene.live.records if r.api == "rest")


async def test_without_a_token_a_non_device_certificate_is_nobody(scene: Scene) -> None:
    nobody = scene.world.anonymous()
    async with scene.world.channel(scene.live.port, nobody) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await _refused(stub.ModelInfer(_infer_request(X1)), grpc.StatusCode.UNAUTHENTICATED)
    rows = await scene.audit(outcome="UNAUTHENTICATED")
    assert rows and rows[-1].principal == "anonymous" and rows[-1].action == KSERVE + "ModelInfer"


async def test_telemetry_is_the_device_s_own(scene: Scene, tmp_path: Path) -> None:
    """dev-b reporting events as dev-a: over gRPC and REST they are dev-b's."""
    batch = telemetry_pb2.TelemetryBatch(
        device_id="dev-a",
        events=[
            telemetry_pb2.TelemetryEvent(
                request_id="r1", model_name="m", route=request_pb2.ROUTE_EDGE
            )
        ],
    )
    stub = telemetry_pb2_grpc.TelemetryServiceStub(scene.channels["dev-b"])
    await stub.Report(telemetry_pb2.ReportRequest(batch=batch), metadata=scene.md("dev-b"))
    ctx = scene.world.ssl_context(scene.who["dev-b"], tmp_path / "rest")
    base = f"https://127.0.0.1:{scene.live.gateway.rest_port}"
    async with httpx.AsyncClient(verify=ctx, base_url=base, timeout=10) as client:
        body = json_format.MessageToJson(telemetry_pb2.ReportRequest(batch=batch))
        r = await client.post(
            "/v1/telemetry", content=body, headers={"content-type": "application/json"}
        )
        assert r.status_code == 200, r.text
    assert [e.device_id for e in scene.live.telemetry if e.request_id == "r1"] == ["dev-b"] * 2
    # Only devices report telemetry.
    svc = telemetry_pb2_grpc.TelemetryServiceStub(scene.channels["svc-globex"])
    await _refused(
        svc.Report(telemetry_pb2.ReportRequest(batch=batch), metadata=scene.md("svc-globex")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
