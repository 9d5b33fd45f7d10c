"""gRPC transport of the gateway: thin servicers, converters, one error table, the server."""

from cloud.grpc._cache import CacheServicer, add_cache_service
from cloud.grpc._deploy import DeployServicer, add_deploy_service
from cloud.grpc._errors import STATUS_BY_CODE, grpc_status, handle_stream, handle_unary, rpc_status
from cloud.grpc._inference import InferenceServicer
from cloud.grpc._registry import RegistryServicer, add_registry_service
from cloud.grpc._server import Gateway, server_credentials
from cloud.grpc._session import SessionServicer, device_id_from_context

__all__ = [
    "STATUS_BY_CODE",
    "CacheServicer",
    "DeployServicer",
    "Gateway",
    "InferenceServicer",
    "RegistryServicer",
    "SessionServicer",
    "add_cache_service",
    "add_deploy_service",
    "add_registry_service",
    "device_id_from_context",
    "grpc_status",
    "handle_stream",
    "handle_unary",
    "rpc_status",
    "server_credentials",
]
