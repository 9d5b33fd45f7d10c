"""Models scoped by org (``authz.models``) on a real gateway over mTLS, gRPC and REST: a
principal of another org may call the method (its role allows it) but the model does not exist
for it — NOT_FOUND / 404 with the words of an unknown model, never listed, its rollout
untouched — and each such refusal is a PERMISSION_DENIED row in the hash-chained audit log
(SQLite, chain verified afterwards). The model's own org keeps using it; ``--insecure``
development sees every model.

``m`` is served to acme, the bundle ``synthetic_branchy`` (and its tails) to globex.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc
from aiml021.registry.v1 import registry_pb2, registry_pb2_grpc
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from cloud.stores import AuditFilter, AuditLog, AuditRow, SqliteAuditBackend, audit_log, verify
from tests.support.authz import AuthzWorld, Identity
from tests.support.gateway import (
    BUNDLE,
    LiveGateway,
    gateway_models_dir,
    running_gateway,
)

__all__ = ["gateway_models_dir"]  # fixture

SCOPES = {"m": ["acme"], BUNDLE: ["globex"]}
ROLES = {"op": "Operator", "admin": "Admin", "obs": "Observer"}


@dataclass
class Scene:
    live: LiveGateway
    world: AuthzWorld
    db: SqliteAuditBackend
    who: dict[str, Identity]
    channels: dict[str, grpc.aio.Channel]
    rest_dir: Path
    log: AuditLog

    def kserve(self, name: str) -> pb_grpc.GRPCInferenceServiceStub:
        return pb_grpc.GRPCInferenceServiceStub(self.channels[name])

    def deploy(self, name: str) -> deploy_pb2_grpc.DeployServiceStub:
        return deploy_pb2_grpc.DeployServiceStub(self.channels[name])

    def registry(self, name: str) -> registry_pb2_grpc.ModelRegistryServiceStub:
        return registry_pb2_grpc.ModelRegistryServiceStub(self.channels[name])

    def md(self, name: str) -> tuple[tuple[str, str], ...]:
        return self.who[name].metadata()

    def rest(self, name: str) -> httpx.AsyncClient:
        ident = self.who[name]
        ctx = self.world.ssl_context(ident, self.rest_dir / name)
        return httpx.AsyncClient(
            verify=ctx,
            base_url=f"https://127.0.0.1:{self.live.gateway.rest_port}",
            headers=ident.headers(),
            timeout=10,
        )

    async def audit(self, **flt: Any) -> list[AuditRow]:
        await self.log.flush()
        return await self.db.rows(AuditFilter(**flt))


@pytest.fixture
async def scene(tmp_path: Path, gateway_models_dir: Path) -> AsyncIterator[Scene]:
    world = AuthzWorld(tmp_path / "authz")
    who = {"dev-a": world.device("dev-a", "acme"), "dev-b": world.device("dev-b", "globex")}
    for org, suffix in (("acme", "a"), ("globex", "b")):
        for short, role in ROLES.items():
            who[f"{short}-{suffix}"] = world.client(f"{short}-{suffix}", role, org)
    url = f"sqlite:///{tmp_path / 'meta.sqlite3'}"
    log = audit_log(url)
    await log.start()
    async with running_gateway(
        gateway_models_dir,
        tls_dir=world.tls_dir,
        authz=world.authz_section(models=SCOPES),
        rest={"port": 0},
        audit=log,
    ) as live:
        channels = {name: world.channel(live.port, ident) for name, ident in who.items()}
        db = SqliteAuditBackend(tmp_path / "meta.sqlite3")
        try:
            yield Scene(live, world, db, who, channels, tmp_path / "rest", log)
        finally:
            for channel in channels.values():
                await channel.close()
    await log.stop()
    verdict = await verify(db)
    assert verdict.ok, verdict
    await db.close()


async def _not_found(call: Any) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.NOT_FOUND, info.value.details()
    return str(info.value.details())


def _rows(rows: list[AuditRow]) -> list[tuple[str, str, str]]:
    return [(r.principal, r.resource, r.outcome) for r in rows]


def _version(scene: Scene) -> str:
    return scene.live.gateway.dataplane.repository.resolve("m").version


def _set_rollout(version: str, model: str = "m") -> deploy_pb2.SetRolloutRequest:
    return deploy_pb2.SetRolloutRequest(
        rollout=deploy_pb2.Rollout(
            model_name=model,
            stable_version=version,
            mode=deploy_pb2.ROLLOUT_MODE_NONE,
            state=deploy_pb2.ROLLOUT_STATE_ACTIVE,
        )
    )


async def test_an_operator_of_another_org_cannot_change_or_read_a_rollout(scene: Scene) -> None:
    v = _version(scene)
    hidden = await _not_found(
        scene.deploy("op-b").SetRollout(_set_rollout(v), metadata=scene.md("op-b"))
    )
    unknown = await _not_found(
        scene.deploy("op-b").SetRollout(_set_rollout(v, "zzz"), metadata=scene.md("op-b"))
    )
    assert hidden.replace("'m'", "'zzz'") == unknown  # nothing tells m exists
    await scene.deploy("op-a").SetRollout(_set_rollout(v), metadata=scene.md("op-a"))
    get = deploy_pb2.GetRolloutRequest(model_name="m")
    for name in ("op-b", "obs-b", "admin-b"):
        await _not_found(scene.deploy(name).GetRollout(get, metadata=scene.md(name)))
    mine = await scene.deploy("obs-a").GetRollout(get, metadata=scene.md("obs-a"))
    assert mine.rollout.stable_version == v
    async with scene.rest("op-b") as client:
        r = await client.post(
            "/v1/deploy/canary",
            json={
                "rollout": {
                    "modelName": "m",
                    "stableVersion": v,
                    "mode": "ROLLOUT_MODE_NONE",
                    "state": "ROLLOUT_STATE_ACTIVE",
                }
            },
        )
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND", r.text
        r = await client.get("/v1/deploy/rollouts/m")
        assert r.status_code == 404, r.text
    async with scene.rest("op-a") as client:
        r = await client.get("/v1/deploy/rollouts/m")
        assert r.status_code == 200 and r.json()["rollout"]["stableVersion"] == v, r.text
    # One row per refused call (the refusal), the owner's change with its outcome.
    assert _rows(await scene.audit(action="SetRollout")) == [
        ("op-b", "m", "PERMISSION_DENIED"),
        ("op-b", "zzz", "NOT_FOUND"),
        ("op-a", "m", "OK"),
    ]
    assert [(r.principal, r.outcome) for r in await scene.audit(action="GetRollout")] == [
        ("op-b", "PERMISSION_DENIED"),
        ("obs-b", "PERMISSION_DENIED"),
        ("admin-b", "PERMISSION_DENIED"),
    ]
    rest_rows = await scene.audit(principal="op-b", action="POST /v1/deploy/canary")
    assert _rows(rest_rows) == [("op-b", "m", "PERMISSION_DENIED")]
    assert "outside the caller's scope (org 'globex'" in rest_rows[0].detail
    assert await scene.audit(principal="op-b", action="GET /v1/deploy/rollouts/{name}")


async def test_an_admin_of_another_org_cannot_unload_or_load_a_model(scene: Scene) -> None:
    unload = pb.RepositoryModelUnloadRequest(model_name="m")
    load = pb.RepositoryModelLoadRequest(model_name="m")
    ready = pb.ModelReadyRequest(name="m")
    await _not_found(
        scene.kserve("admin-b").RepositoryModelUnload(unload, metadata=scene.md("admin-b"))
    )
    async with scene.rest("admin-b") as client:
        r = await client.post("/v2/repository/models/m/unload", json={})
        assert r.status_code == 404, r.text
    assert (await scene.kserve("dev-a").ModelReady(ready, metadata=scene.md("dev-a"))).ready
    await scene.kserve("admin-a").RepositoryModelUnload(unload, metadata=scene.md("admin-a"))
    # Unloaded, m is still acme's: not in globex's index, not loadable by globex.
    index = pb.RepositoryIndexRequest()
    theirs = await scene.kserve("admin-b").RepositoryIndex(index, metadata=scene.md("admin-b"))
    assert "m" not in {m.name for m in theirs.models} and theirs.models
    ours = await scene.kserve("admin-a").RepositoryIndex(index, metadata=scene.md("admin-a"))
    assert {(m.name, m.reason) for m in ours.models} == {("m", "unloaded")}
    await _not_found(
        scene.kserve("admin-b").RepositoryModelLoad(load, metadata=scene.md("admin-b"))
    )
    await scene.kserve("admin-a").RepositoryModelLoad(load, metadata=scene.md("admin-a"))
    assert (await scene.kserve("dev-a").ModelReady(ready, metadata=scene.md("dev-a"))).ready
    assert _rows(await scene.audit(action="RepositoryModelUnload")) == [
        ("admin-b", "m", "PERMISSION_DENIED"),
        ("admin-a", "m", "OK"),
    ]
    assert _rows(await scene.audit(action="RepositoryModelLoad")) == [
        ("admin-b", "m", "PERMISSION_DENIED"),
        ("admin-a", "m", "OK"),
    ]
    rest = await scene.audit(action="POST /v2/repository/models/{name}/unload")
    assert _rows(rest) == [("admin-b", "m", "PERMISSION_DENIED")]


async def test_an_observer_lists_only_its_org_s_models(scene: Scene) -> None:
    x = np.ones((1, 4), np.float32)
    infer = pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=x.shape)],
        raw_input_contents=[x.tobytes()],
    )
    await scene.kserve("dev-a").ModelInfer(infer, metadata=scene.md("dev-a"))  # m has numbers
    lst = registry_pb2.ListModelsRequest()
    theirs = await scene.registry("obs-b").ListModels(lst, metadata=scene.md("obs-b"))
    names_b = {m.name for m in theirs.models}
    assert BUNDLE in names_b and all(n.split(".")[0] == BUNDLE for n in names_b)
    ours = await scene.registry("obs-a").ListModels(lst, metadata=scene.md("obs-a"))
    assert {m.name for m in ours.models} == {"m"}
    get = registry_pb2.GetModelRequest(name="m")
    await _not_found(scene.registry("obs-b").GetModel(get, metadata=scene.md("obs-b")))
    stats = await scene.kserve("obs-b").ModelStatistics(
        pb.ModelStatisticsRequest(), metadata=scene.md("obs-b")
    )
    assert {s.name for s in stats.model_stats} == names_b
    await _not_found(
        scene.kserve("obs-b").ModelStatistics(
            pb.ModelStatisticsRequest(name="m"), metadata=scene.md("obs-b")
        )
    )
    index = await scene.kserve("obs-b").RepositoryIndex(
        pb.RepositoryIndexRequest(), metadata=scene.md("obs-b")
    )
    assert {m.name for m in index.models} == names_b
    async with scene.rest("obs-b") as client:
        r = await client.get("/v1/models")
        assert {m["name"] for m in r.json()["models"]} == names_b, r.text
        assert (await client.get("/v1/models/m")).status_code == 404
        r = await client.get("/v2/models/stats")
        assert {s["name"] for s in r.json()["model_stats"]} == names_b, r.text
        assert (await client.get("/v2/models/m/stats")).status_code == 404
        r = await client.post("/v2/repository/index", json={})
        assert {m["name"] for m in r.json()} == names_b, r.text
        summary = (await client.get("/v1/console/summary")).json()
        assert "m" not in summary["requests"]["by_model"]
    async with scene.rest("obs-a") as client:
        summary = (await client.get("/v1/console/summary")).json()
        assert summary["requests"]["by_model"].get("m", 0) >= 1
        assert (await client.get("/v1/models/m")).status_code == 200
    refused = await scene.audit(principal="obs-b", outcome="PERMISSION_DENIED")
    assert {r.action.rsplit("/", 1)[-1] for r in refused} >= {"GetModel", "ModelStatistics"}
    assert {r.resource for r in refused} == {"m"}


async def test_a_device_of_another_org_cannot_read_a_model_s_metadata(scene: Scene) -> None:
    meta = pb.ModelMetadataRequest(name="m")
    hidden = await _not_found(scene.kserve("dev-b").ModelMetadata(meta, metadata=scene.md("dev-b")))
    unknown = await _not_found(
        scene.kserve("dev-b").ModelMetadata(
            pb.ModelMetadataRequest(name="zzz"), metadata=scene.md("dev-b")
        )
    )
    assert hidden.replace("'m'", "'zzz'") == unknown and "served models: " + BUNDLE in hidden
    await _not_found(
        scene.kserve("dev-b").ModelConfig(
            pb.ModelConfigRequest(name="m"), metadata=scene.md("dev-b")
        )
    )
    ready = await scene.kserve("dev-b").ModelReady(
        pb.ModelReadyRequest(name="m"), metadata=scene.md("dev-b")
    )
    assert not ready.ready
    x = np.ones((1, 4), np.float32)
    infer = pb.ModelInferRequest(
        model_name="m",
        inputs=[pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=x.shape)],
        raw_input_contents=[x.tobytes()],
    )
    await _not_found(scene.kserve("dev-b").ModelInfer(infer, metadata=scene.md("dev-b")))
    mine = await scene.kserve("dev-a").ModelMetadata(meta, metadata=scene.md("dev-a"))
    assert mine.name == "m"
    await scene.kserve("dev-a").ModelInfer(infer, metadata=scene.md("dev-a"))
    async with scene.rest("dev-b") as client:
        assert (await client.get("/v2/models/m")).status_code == 404
        assert (await client.get("/v2/models/m/config")).status_code == 404
        body = {
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 1, 1, 1]}]
        }
        assert (await client.post("/v2/models/m/infer", json=body)).status_code == 404
        ready_hidden = await client.get("/v2/models/m/ready")
        ready_unknown = await client.get("/v2/models/zzz/ready")
        assert ready_hidden.status_code == ready_unknown.status_code != 200
    async with scene.rest("dev-a") as client:
        assert (await client.get("/v2/models/m")).status_code == 200
    refused = await scene.audit(principal="dev-b")
    assert refused and {(r.resource, r.outcome) for r in refused} == {("m", "PERMISSION_DENIED")}
    assert {r.action.rsplit("/", 1)[-1] for r in refused} >= {
        "ModelMetadata",
        "ModelConfig",
        "ModelReady",
        "ModelInfer",
    }
    assert not await scene.audit(principal="dev-a", outcome="PERMISSION_DENIED")


async def test_insecure_development_sees_every_model(
    tmp_path: Path, gateway_models_dir: Path
) -> None:
    async with running_gateway(gateway_models_dir, authz={"models": SCOPES}) as live:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{live.port}") as channel:
            stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
            listed = await stub.ListModels(registry_pb2.ListModelsRequest())
            assert {"m", BUNDLE} <= {m.name for m in listed.models}
            meta = await pb_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                pb.ModelMetadataRequest(name="m")
            )
            assert meta.name == "m"


async def test_a_device_s_session_reaches_only_its_org_s_models(scene: Scene) -> None:
    """On the session stream the same: another org's model is one error for that request
    (NOT_FOUND, as an unknown model), the stream and the device's own requests go on."""
    from tests.integration.cloud._gateway import SessionClient, header, hello

    x = np.ones((1, 4), np.float32)
    async with scene.world.channel(scene.live.port, scene.who["dev-b"]) as channel:
        client = SessionClient(channel)
        await client.send(hello("dev-b"))
        # The header is refused before any payload is sent.
        await client.send(header("r1", x.shape, model="m"))
        hidden = await client.recv()
        await client.send(header("r2", x.shape, model="zzz"))
        unknown = await client.recv()
        for answer in (hidden, unknown):
            assert answer.WhichOneof("frame") == "infer_error", answer
            assert answer.infer_error.status.code == grpc.StatusCode.NOT_FOUND.value[0]
        words = hidden.infer_error.status.message.replace("'m'", "'zzz'")
        assert words == unknown.infer_error.status.message
        await client.call.done_writing()
    async with scene.world.channel(scene.live.port, scene.who["dev-a"]) as channel:
        client = SessionClient(channel)
        await client.send(hello("dev-a"))
        mine = await client.infer("r3", x, model="m")
        assert mine.WhichOneof("frame") == "infer_result", mine
        await client.call.done_writing()
    rows = await scene.audit(principal="dev-b")
    assert _rows(rows) == [("dev-b", "m", "PERMISSION_DENIED")]
    assert rows[0].action == "/aiml021.session.v1.SessionService/Connect"
