"""aiml021.deploy.v1.DeployService: SetRollout / GetRollout over the core's
:class:`cloud.core.RolloutManager` (convert, call, convert back)."""

from __future__ import annotations

import grpc
from aiml021.deploy.v1 import deploy_pb2, deploy_pb2_grpc

from cloud.core import RolloutManager
from cloud.grpc._control_converters import rollout_from_pb, rollout_to_pb, stats_to_pb
from cloud.grpc._errors import handle_unary

SERVICE = deploy_pb2.DESCRIPTOR.services_by_name["DeployService"].full_name


class DeployServicer(deploy_pb2_grpc.DeployServiceServicer):
    """SetRollout / GetRollout over a :class:`RolloutManager` (the registry reads each model's
    stable version from the same manager)."""

    def __init__(self, manager: RolloutManager) -> None:
        self.manager = manager

    @handle_unary
    async def SetRollout(
        self, request: deploy_pb2.SetRolloutRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.SetRolloutResponse:
        rollout = self.manager.set(rollout_from_pb(request.rollout))
        return deploy_pb2.SetRolloutResponse(rollout=rollout_to_pb(rollout))

    @handle_unary
    async def GetRollout(
        self, request: deploy_pb2.GetRolloutRequest, context: grpc.aio.ServicerContext
    ) -> deploy_pb2.GetRolloutResponse:
        rollout, stats = self.manager.get(request.model_name)
        return deploy_pb2.GetRolloutResponse(
            rollout=rollout_to_pb(rollout), stats=stats_to_pb(stats)
        )


def add_deploy_service(server: grpc.aio.Server, manager: RolloutManager) -> str:
    """Register DeployService on ``server``; returns its full name."""
    deploy_pb2_grpc.add_DeployServiceServicer_to_server(DeployServicer(manager), server)
    return SERVICE


__all__ = ["SERVICE", "DeployServicer", "add_deploy_service"]
