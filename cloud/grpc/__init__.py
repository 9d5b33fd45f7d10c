"""gRPC transport of the gateway: every servicer (thin: convert, call the core, convert back),
the converters, the one error table and the server-construction helpers. ``cloud.app`` mounts
them."""

from cloud.grpc._cache import CacheServicer, add_cache_service
from cloud.grpc._deploy import DeployServicer, add_deploy_service
from cloud.grpc._errors import STATUS_BY_CODE, grpc_status, handle_stream, handle_unary, rpc_status
from cloud.grpc._inference import InferenceServicer
from cloud.grpc._outbox import StreamGuards
from cloud.grpc._peer import device_id_from_context
from cloud.grpc._registry import RegistryServicer, add_registry_service
from cloud.grpc._server import (
    INFERENCE_SERVICE,
    ServiceRegistration,
    bind,
    enable_health_and_reflection,
    grpc_server,
    server_credentials,
)
from cloud.grpc._session import SERVICE as SESSION_SERVICE
from cloud.grpc._session import SessionServicer
from cloud.grpc._telemetry import SERVICE as TELEMETRY_SERVICE
from cloud.grpc._telemetry import TelemetryServicer, events_from_pb

__all__ = [
    "INFERENCE_SERVICE",
    "SESSION_SERVICE",
    "STATUS_BY_CODE",
    "TELEMETRY_SERVICE",
    "CacheServicer",
    "DeployServicer",
    "InferenceServicer",
    "RegistryServicer",
    "ServiceRegistration",
    "SessionServicer",
    "StreamGuards",
    "TelemetryServicer",
    "add_cache_service",
    "add_deploy_service",
    "add_registry_service",
    "bind",
    "device_id_from_context",
    "enable_health_and_reflection",
    "events_from_pb",
    "grpc_server",
    "grpc_status",
    "handle_stream",
    "handle_unary",
    "rpc_status",
    "server_credentials",
]
