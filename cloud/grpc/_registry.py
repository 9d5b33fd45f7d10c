"""aiml021.registry.v1.ModelRegistryService: ListModels / GetModel over the core's
:class:`cloud.core.RegistryView` (convert, call, convert back)."""

from __future__ import annotations

import grpc
from aiml021.registry.v1 import registry_pb2, registry_pb2_grpc

from cloud.core import RegistryView
from cloud.grpc._control_converters import model_to_pb
from cloud.grpc._errors import handle_unary

SERVICE = registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name


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


def add_registry_service(server: grpc.aio.Server, view: RegistryView) -> str:
    """Register ModelRegistryService on ``server``; returns its full name."""
    registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server(RegistryServicer(view), server)
    return SERVICE


__all__ = ["SERVICE", "RegistryServicer", "add_registry_service"]
