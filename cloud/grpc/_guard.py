"""The server interceptor that keeps every status ours: malformed messages are INVALID_ARGUMENT,
unexpected faults INTERNAL, never grpc's UNKNOWN with a Python exception's text.

grpc deserializes a request before any servicer code runs; bytes that are not the method's
message end the call with UNKNOWN ("Unexpected <class 'DecodeError'>"), and on a
request-streaming method the stream simply ends as if the client had closed it (OK). The guard
swaps each method's deserializer for one that turns such bytes into a :class:`Malformed` marker
and wraps the behaviour so that the marker aborts the call with INVALID_ARGUMENT naming the
message type (on a stream, reading stops there: the requests before it are still answered, then
the stream ends with INVALID_ARGUMENT). An exception that escapes a handler (a bug, not an :class:`AimlError`) is logged
once and answered with INTERNAL. Handlers registered without a deserializer (the session stream
parses its own frames) keep theirs.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc.aio import AbortError

log = logging.getLogger(__name__)


class Malformed:
    """What a request's bytes became when they are not a ``message`` message."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    @property
    def details(self) -> str:
        return f"malformed request: the bytes are not a {self.message} message"


def _lenient(deserialize: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    owner = getattr(deserialize, "__self__", None)
    name = getattr(owner, "DESCRIPTOR", None)
    message = name.full_name if name is not None else "request"

    def parse(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception:
            return Malformed(message)

    return parse


async def _until_malformed(requests: AsyncIterator[Any], bad: list[Malformed]) -> Any:
    # A malformed message ends the request stream as a half-close would (the handler answers
    # what it has); the call then ends with INVALID_ARGUMENT. Aborting from here instead would
    # send the status from the handler's reader task while the handler may be writing.
    async for msg in requests:
        if isinstance(msg, Malformed):
            bad.append(msg)
            return
        yield msg


async def _internal(method: str, context: grpc.aio.ServicerContext, exc: Exception) -> None:
    log.error("%s failed", method, exc_info=exc)
    await context.abort(
        grpc.StatusCode.INTERNAL, f"{method}: internal error ({type(exc).__name__})"
    )


def _guard(method: str, h: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """``h`` with the lenient deserializer and a behaviour that answers Malformed and faults."""
    if h.request_deserializer is None:
        return h
    if h.unary_unary is not None:
        inner_uu = h.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Malformed):
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.details)
            try:
                return await inner_uu(request, context)
            except (AbortError, grpc.RpcError) as exc:  # aborts are already answered
                # grpc keeps the abort with the call, and the abort's traceback keeps every frame
                # it passed (a cycle through the context, freed only by a full collection): the
                # servicer's and the other interceptors' frames held the request (MiBs) there.
                # They are finished: their locals go now, and so does this frame's request.
                traceback.clear_frames(exc.__traceback__)
                del request
                raise
            except Exception as exc:
                error = exc
            await _internal(method, context, error)

        return h._replace(
            request_deserializer=_lenient(h.request_deserializer), unary_unary=unary_unary
        )
    if h.stream_stream is not None:
        inner_ss = h.stream_stream

        async def stream_stream(
            requests: AsyncIterator[Any], context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            bad: list[Malformed] = []
            try:
                async for item in inner_ss(_until_malformed(requests, bad), context):
                    yield item
            except (AbortError, grpc.RpcError):
                raise
            except Exception as exc:
                error: Exception | None = exc
            else:
                error = None
            if error is not None:
                await _internal(method, context, error)
            if bad:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, bad[0].details)

        return h._replace(
            request_deserializer=_lenient(h.request_deserializer), stream_stream=stream_stream
        )
    return h  # unary-stream and stream-unary methods: none served today


class StatusGuard(grpc.aio.ServerInterceptor):
    """Installs :func:`_guard` on every method (wrapped handlers are built once per method)."""

    def __init__(self) -> None:
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:  # unknown method: grpc answers UNIMPLEMENTED
                return handler
            wrapped = self._wrapped[method] = _guard(method, handler)
        return wrapped


__all__ = ["Malformed", "StatusGuard"]
