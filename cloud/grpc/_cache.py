"""aiml021.cache.v1.CacheService: Get / Put by content hash over a
:class:`cloud.core.ResultCache` (memory or Redis; convert, call, convert back)."""

from __future__ import annotations

import grpc
from aiml021.cache.v1 import cache_pb2, cache_pb2_grpc

from cloud.core import ResultCache
from cloud.grpc._control_converters import cache_entry_from_pb, cache_entry_to_pb
from cloud.grpc._errors import handle_unary
from common.prototime import duration_to_s

SERVICE = cache_pb2.DESCRIPTOR.services_by_name["CacheService"].full_name

MAX_CACHE_ENTRY_BYTES = 4 * 1024 * 1024
"""Largest entry a Put may store (checked before its tensors are copied)."""


class CacheServicer(cache_pb2_grpc.CacheServiceServicer):
    """Get / Put by content hash over a :class:`ResultCache`."""

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
        ttl = duration_to_s(request.ttl) if request.HasField("ttl") else None
        await self.cache.put(request.model_name, request.content_hash, entry, ttl)
        return cache_pb2.PutResponse()


def add_cache_service(server: grpc.aio.Server, cache: ResultCache) -> str:
    """Register CacheService on ``server``; returns its full name."""
    cache_pb2_grpc.add_CacheServiceServicer_to_server(CacheServicer(cache), server)
    return SERVICE


__all__ = ["MAX_CACHE_ENTRY_BYTES", "SERVICE", "CacheServicer", "add_cache_service"]
