"""The one table between :class:`common.errors.ErrorCode` and gRPC status, and the servicer
decorators.

Servicers raise :class:`common.errors.AimlError` and never name a status: unary methods abort
with the mapped status (:func:`handle_unary`), streaming methods do the same for stream-level
faults (:func:`handle_stream`; per-request faults travel inside the stream as InferError /
error_message with :func:`rpc_status`). A status received from a gRPC peer becomes our error
again through :func:`error_from_status` / :func:`error_from_rpc_error`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, cast

import grpc
from google.rpc import status_pb2

from common.errors import AimlError, ErrorCode, error_from_code

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

CODE_BY_STATUS: dict[grpc.StatusCode, ErrorCode] = {s: c for c, s in STATUS_BY_CODE.items()}
"""The reverse; statuses we never send (UNKNOWN, ABORTED, UNIMPLEMENTED, ...) are INTERNAL."""


def grpc_status(error: AimlError) -> grpc.StatusCode:
    """The gRPC status code of ``error``."""
    return STATUS_BY_CODE.get(error.code, grpc.StatusCode.INTERNAL)


MAX_MESSAGE_CHARS = 1024
"""Longest status message sent: messages quote what the client sent (names, ids), and a status
travels in a trailer that clients refuse past 8 KiB (they would see RESOURCE_EXHAUSTED)."""


def bounded(message: str) -> str:
    """``message`` cut to :data:`MAX_MESSAGE_CHARS` (saying how long it was)."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    return f"{message[: MAX_MESSAGE_CHARS - 40]}... ({len(message)} characters)"


def detach(error: AimlError) -> tuple[grpc.StatusCode, str]:
    """Status and message (:func:`bounded`) of ``error``, its traceback dropped: the frames it
    holds (with the request's bytes) are freed when the handler returns, not at the next cycle
    collection."""
    error.__traceback__ = None
    return grpc_status(error), bounded(error.message)


def rpc_status(error: AimlError) -> status_pb2.Status:
    """``google.rpc.Status`` for a per-request error inside a stream."""
    return status_pb2.Status(code=error.code.rpc_code, message=bounded(error.message))


def error_from_status(status: grpc.StatusCode, details: str) -> AimlError:
    """Our error for a gRPC status received from a peer (OK and unknown statuses: INTERNAL)."""
    return error_from_code(CODE_BY_STATUS.get(status, ErrorCode.INTERNAL), details)


def error_from_rpc_error(exc: grpc.RpcError) -> AimlError:
    """Our error for a failed gRPC call (the one place a client turns ``grpc.RpcError`` into an
    :class:`AimlError`)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return error_from_status(code, details or code.name)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])
G = TypeVar("G", bound=Callable[..., AsyncIterator[Any]])


def handle_unary(method: F) -> F:
    """Abort the call with the mapped status when ``method`` raises an :class:`AimlError`."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except AimlError as exc:
            status, message = detach(exc)
        # Aborting outside the except block: grpc keeps the abort exception with the call, and
        # one raised inside it would chain ours, whose traceback holds the request's frames.
        await context.abort(status, message)

    return wrapper  # type: ignore[return-value]


def handle_stream(method: G) -> G:
    """Abort a response-streaming call with the mapped status on :class:`AimlError`."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        # aclosing: the method's own cleanup (finally blocks) runs when the call ends, not when
        # the garbage collector finds the suspended generator.
        items = cast(AsyncGenerator[Any, None], method(self, request, context))
        async with contextlib.aclosing(items):
            try:
                async for item in items:
                    yield item
                return
            except AimlError as exc:
                status, message = detach(exc)
            await context.abort(status, message)

    return wrapper  # type: ignore[return-value]


__all__ = [
    "CODE_BY_STATUS",
    "MAX_MESSAGE_CHARS",
    "STATUS_BY_CODE",
    "bounded",
    "detach",
    "error_from_rpc_error",
    "error_from_status",
    "grpc_status",
    "handle_stream",
    "handle_unary",
    "rpc_status",
]
