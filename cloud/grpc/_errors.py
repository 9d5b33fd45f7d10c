"""One table from :class:`common.errors.ErrorCode` to gRPC status, and the servicer decorators.

Unary methods abort with the mapped status; streaming methods do the same for stream-level
faults (per-request faults travel inside the stream as InferError / error_message).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.rpc import code_pb2, status_pb2

from common.errors import AimlError, ErrorCode

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorCode.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorCode.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorCode.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.CANCELLED: grpc.StatusCode.CANCELLED,
    ErrorCode.DATA_LOSS: grpc.StatusCode.DATA_LOSS,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
}

RPC_CODE_BY_CODE: dict[ErrorCode, int] = {c: getattr(code_pb2, c.value) for c in ErrorCode}


def grpc_status(error: AimlError) -> grpc.StatusCode:
    """The gRPC status code of ``error``."""
    return STATUS_BY_CODE.get(error.code, grpc.StatusCode.INTERNAL)


def rpc_status(error: AimlError) -> status_pb2.Status:
    """``google.rpc.Status`` for a per-request error inside a stream."""
    return status_pb2.Status(code=RPC_CODE_BY_CODE[error.code], message=error.message)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
G = TypeVar("G", bound=Callable[..., AsyncIterator[Any]])


def handle_unary(method: F) -> F:
    """Abort the call with the mapped status when ``method`` raises an :class:`AimlError`."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except AimlError as exc:
            await context.abort(grpc_status(exc), exc.message)

    return wrapper  # type: ignore[return-value]


def handle_stream(method: G) -> G:
    """Abort a response-streaming call with the mapped status on :class:`AimlError`."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            async for item in method(self, request, context):
                yield item
        except AimlError as exc:
            await context.abort(grpc_status(exc), exc.message)

    return wrapper  # type: ignore[return-value]


__all__ = [
    "RPC_CODE_BY_CODE",
    "STATUS_BY_CODE",
    "grpc_status",
    "handle_stream",
    "handle_unary",
    "rpc_status",
]
