"""Thin gRPC servicers: ModelRegistryService, DeployService, CacheService (convert, await, convert)."""

from __future__ import annotations

import grpc
from aiml021.cache.v1 import cache_pb2, cache_pb2_grpc
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc
from aiml021.registry.v1 import registry_pb2, registry_pb2_grpc

from cloud.core import ResultCache, RolloutManager
from cloud.grpc import handle_unary

from ._converters import (
    cache_entry_from_pb,
    cache_entry_to_pb,
    model_to_pb,
    rollout_from_pb,
    rollout_to_pb,
    stats_to_pb,
)
from ._registry import RegistryView

MAX_CACHE_ENTRY_BYTES = 4 * 1024 * 1024


class RegistryServicer(registry_pb2_grpc.ModelRegistryServiceServicer):
    """ListModels / GetModel over a :class:`RegistryView`."""

    def __init__(self, view: RegistryView) -> None:
        self.view = view

    @handle_unary
    async def ListModels(
        self, request: registry_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.ListModelsResponse:
        models, token = self.view.list(request.page_size, request.page_token)
        return registry_pb2.ListModelsResponse(
            models=[model_to_pb(m) for m in models], next_page_token=token
        )

    @handle_unary
    async def GetModel(
        self, request: registry_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> registry_pb2.GetModelResponse:
        return registry_pb2.GetModelResponse(model=model_to_pb(self.view.get(request.name)))


class DeployServicer(deploy_pb2_grpc.DeployServiceServicer):
    """SetRollout / GetRollout over a :class:`RolloutManager`; keeps the registry's default
    version equal to the rollout's stable version."""

    def __init__(self, manager: RolloutManager, view: RegistryView | None = None) -> None:
        self.manager = manager
        self.view = view

    @handle_unary
    async def SetRollout(
        self, request: deploy_pb2.SetRolloutRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.SetRolloutResponse:
        rollout = self.manager.set(rollout_from_pb(request.rollout))
        if self.view is not None:
            self.view.stable_versions[rollout.model_name] = rollout.stable_version
        return deploy_pb2.SetRolloutResponse(rollout=rollout_to_pb(rollout))

    @handle_unary
    async def GetRollout(
        self, request: deploy_pb2.GetRolloutRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.GetRolloutResponse:
        rollout, stats = self.manager.get(request.model_name)
        return deploy_pb2.GetRolloutResponse(
            rollout=rollout_to_pb(rollout), stats=stats_to_pb(stats)
        )


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Get / Put by content hash over a :class:`ResultCache` (memory or Redis)."""

    def __init__(self, cache: ResultCache, max_entry_bytes: int = MAX_CACHE_ENTRY_BYTES) -> None:
        self.cache = cache
        self.max_entry_bytes = max_entry_bytes

    @handle_unary
    async def Get(
        self, request: cache_pb2.GetRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.GetResponse:
        entry = await self.cache.get(request.model_name, request.content_hash)
        if entry is None:
            return cache_pb2.GetResponse(found=False)
        return cache_pb2.GetResponse(found=True, entry=cache_entry_to_pb(entry))

    @handle_unary
    async def Put(
        self, request: cache_pb2.PutRequest, context: grpc.aio.ServicerContext
    ) -> cache_pb2.PutResponse:
        entry = cache_entry_from_pb(request.entry, self.max_entry_bytes)
        ttl = request.ttl.ToNanoseconds() / 1e9 if request.HasField("ttl") else None
        await self.cache.put(request.model_name, request.content_hash, entry, ttl)
        return cache_pb2.PutResponse()


def add_services(
    server: grpc.aio.Server, view: RegistryView, manager: RolloutManager, cache: ResultCache
) -> list[str]:
    """Register the three services on ``server``; returns their full names (for reflection)."""
    registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server(RegistryServicer(view), server)
    deploy_pb2_grpc.add_DeployServiceServicer_to_server(DeployServicer(manager, view), server)
    cache_pb2_grpc.add_CacheServiceServicer_to_server(CacheServicer(cache), server)
    return [
        registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name,
        deploy_pb2.DESCRIPTOR.services_by_name["DeployService"].full_name,
        cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name,
    ]
