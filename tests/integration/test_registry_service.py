"""Registry, deploy and cache services over a real grpc.aio server on loopback."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from aiml021.cache.v1 import cache_pb2, cache_pb2_grpc
from aiml021.common.v1 import tensor_pb2
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc
from aiml021.registry.v1 import registry_pb2, registry_pb2_grpc

from cloud.core import ModelRepository, RegistryView, RolloutManager, spec_from_onnx
from cloud.grpc import add_cache_service, add_deploy_service, add_registry_service
from cloud.stores import MemoryResultCache
from tests.support.tiny_models import tail_model


@pytest.fixture
async def channel(tmp_path: Path) -> AsyncIterator[grpc.aio.Channel]:
    specs = [
        spec_from_onnx(tail_model(tmp_path / f"{n}{v}.onnx"), name=n, version=v)
        for n, v in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1")]
    ]
    repo = ModelRepository(specs)
    manager = RolloutManager(
        lambda n, v: v in repo.versions(n) if n in {s.name for s in repo.specs()} else False
    )
    view = RegistryView(repo, max_page_size=2, rollouts=manager)
    server = grpc.aio.server()
    add_registry_service(server, view)
    add_deploy_service(server, manager)
    add_cache_service(server, MemoryResultCache())
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


async def test_list_and_get_models(channel: grpc.aio.Channel) -> None:
    stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    page1 = await stub.ListModels(registry_pb2.ListModelsRequest())
    assert [m.name for m in page1.models] == ["a", "b"] and page1.next_page_token
    page2 = await stub.ListModels(registry_pb2.ListModelsRequest(page_token=page1.next_page_token))
    assert [m.name for m in page2.models] == ["c"] and not page2.next_page_token
    a = (await stub.GetModel(registry_pb2.GetModelRequest(name="a"))).model
    assert [v.version for v in a.versions] == ["1", "2"] and a.default_version == "2"
    assert a.versions[0].inputs[0].name == "features" and list(a.versions[0].inputs[0].shape) == [
        -1,
        4,
        3,
        3,
    ]
    assert a.versions[0].state == registry_pb2.VERSION_STATE_READY
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetModel(registry_pb2.GetModelRequest(name="zzz"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND and "served models" in (
        err.value.details() or ""
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.ListModels(registry_pb2.ListModelsRequest(page_size=-1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_set_and_get_rollout(channel: grpc.aio.Channel) -> None:
    deploy = deploy_pb2_grpc.DeployServiceStub(channel)
    registry = registry_pb2_grpc.ModelRegistryServiceStub(channel)
    rollout = deploy_pb2.Rollout(
        model_name="a", stable_version="1", candidate_version="2", mode=deploy_pb2.ROLLOUT_MODE_CANARY,
        traffic_fraction=0.1, rollback=deploy_pb2.RollbackPolicy(max_error_rate=0.05, min_requests=50),
    )  # fmt: skip
    got = (await deploy.SetRollout(deploy_pb2.SetRolloutRequest(rollout=rollout))).rollout
    assert got.state == deploy_pb2.ROLLOUT_STATE_ACTIVE and got.updated_at.seconds > 0
    assert (
        await registry.GetModel(registry_pb2.GetModelRequest(name="a"))
    ).model.default_version == "1"
    res = await deploy.GetRollout(deploy_pb2.GetRolloutRequest(model_name="a"))
    assert res.rollout.traffic_fraction == pytest.approx(0.1) and res.stats.candidate_requests == 0
    for bad, code in [
        (deploy_pb2.Rollout(model_name="a", stable_version="1"), grpc.StatusCode.INVALID_ARGUMENT),  # mode unspecified
        (deploy_pb2.Rollout(model_name="a", stable_version="1", candidate_version="9", mode=deploy_pb2.ROLLOUT_MODE_SHADOW), grpc.StatusCode.NOT_FOUND),
    ]:  # fmt: skip
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await deploy.SetRollout(deploy_pb2.SetRolloutRequest(rollout=bad))
        assert err.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await deploy.GetRollout(deploy_pb2.GetRolloutRequest(model_name="b"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_cache_get_put(channel: grpc.aio.Channel) -> None:
    cache = cache_pb2_grpc.CacheServiceStub(channel)
    h = hashlib.sha256(b"image").hexdigest()
    assert not (await cache.Get(cache_pb2.GetRequest(model_name="a", content_hash=h))).found
    logits = np.arange(10, dtype=np.float32)[None]
    entry = cache_pb2.CacheEntry(top_class=9, confidence=0.9, model_version="1")
    entry.outputs.add(
        name="logits", dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[1, 10], contents=logits.tobytes()
    )
    await cache.Put(cache_pb2.PutRequest(model_name="a", content_hash=h, entry=entry))
    got = await cache.Get(cache_pb2.GetRequest(model_name="a", content_hash=h))
    assert got.found and got.entry.top_class == 9
    np.testing.assert_array_equal(
        np.frombuffer(got.entry.outputs[0].contents, np.float32), logits[0]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cache.Get(cache_pb2.GetRequest(model_name="a", content_hash="nothex"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = cache_pb2.CacheEntry()
    bad.outputs.add(name="x", dtype=tensor_pb2.DATA_TYPE_FLOAT32, shape=[1000], contents=b"\0" * 8)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await cache.Put(cache_pb2.PutRequest(model_name="a", content_hash=h, entry=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
