"""gRPC transport of the gateway: thin servicers, converters, one error table, the server."""

from cloud.grpc._errors import STATUS_BY_CODE, grpc_status, handle_stream, handle_unary, rpc_status
from cloud.grpc._inference import InferenceServicer
from cloud.grpc._server import Gateway, server_credentials
from cloud.grpc._session import SessionServicer, device_id_from_context

__all__ = [
    "STATUS_BY_CODE",
    "Gateway",
    "InferenceServicer",
    "SessionServicer",
    "device_id_from_context",
    "grpc_status",
    "handle_stream",
    "handle_unary",
    "rpc_status",
    "server_credentials",
]
