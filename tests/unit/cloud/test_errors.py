"""The two transport tables: ErrorCode <-> gRPC status (cloud.grpc) and ErrorCode -> HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from cloud.grpc._errors import (
    CODE_BY_STATUS,
    STATUS_BY_CODE,
    error_from_rpc_error,
    error_from_status,
    grpc_status,
    handle_stream,
    handle_unary,
    rpc_status,
)
from cloud.rest._errors import HTTP_STATUS, error_body, http_status
from common.errors import ERROR_TYPES, ErrorCode, Internal, NotFound, Unavailable


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_every_code_has_one_grpc_status_of_the_same_name_and_back(code: ErrorCode) -> None:
    status = STATUS_BY_CODE[code]
    assert status.name == code.value
    assert CODE_BY_STATUS[status] is code
    error = ERROR_TYPES[code]("m")
    assert grpc_status(error) is status
    assert rpc_status(error).code == code.rpc_code and rpc_status(error).message == "m"
    back = error_from_status(status, "m")
    assert type(back) is type(error) and back.message == "m"


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_every_code_has_an_http_status(code: ErrorCode) -> None:
    error = ERROR_TYPES[code]("m")
    assert http_status(error) == HTTP_STATUS[code]
    assert 400 <= http_status(error) < 600
    assert error_body(error) == {"code": code.value, "message": "m"}


def test_http_statuses_of_the_common_codes() -> None:
    assert http_status(NotFound("x")) == 404
    assert http_status(Unavailable("x")) == 503
    assert HTTP_STATUS[ErrorCode.RESOURCE_EXHAUSTED] == 429


@pytest.mark.parametrize(
    "status", [grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.OK]
)
def test_statuses_we_never_send_become_internal(status: grpc.StatusCode) -> None:
    assert isinstance(error_from_status(status, "x"), Internal)


class _RpcError(grpc.RpcError):
    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        self._status, self._details = status, details

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return self._details


def test_a_failed_call_becomes_our_error() -> None:
    err = error_from_rpc_error(_RpcError(grpc.StatusCode.NOT_FOUND, "no model"))
    assert isinstance(err, NotFound) and err.message == "no model"
    assert error_from_rpc_error(_RpcError(grpc.StatusCode.UNAVAILABLE, "")).message == "UNAVAILABLE"


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, status: grpc.StatusCode, details: str) -> None:
        self.aborted = (status, details)
        raise _Aborted


class _Servicer:
    def __init__(self) -> None:
        self.cleaned = False

    @handle_unary
    async def Unary(self, request: Any, context: Any) -> str:
        raise NotFound(f"no {request}")

    @handle_stream
    async def Stream(self, request: Any, context: Any) -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
            raise Unavailable("draining")
        finally:
            self.cleaned = True


async def test_unary_methods_abort_with_the_mapped_status() -> None:
    ctx = _Context()
    with pytest.raises(_Aborted):
        await _Servicer().Unary("m", ctx)
    assert ctx.aborted == (grpc.StatusCode.NOT_FOUND, "no m")


async def test_stream_methods_abort_with_the_mapped_status_after_their_cleanup() -> None:
    ctx, servicer = _Context(), _Servicer()
    got = []
    with pytest.raises(_Aborted):
        async for item in servicer.Stream(None, ctx):
            got.append(item)
    assert got == [1, 2] and ctx.aborted == (grpc.StatusCode.UNAVAILABLE, "draining")
    assert servicer.cleaned


async def test_a_stream_closed_by_its_caller_runs_the_method_cleanup_at_once() -> None:
    servicer = _Servicer()
    stream = servicer.Stream(None, _Context())
    assert await stream.__anext__() == 1
    await stream.aclose()  # type: ignore[attr-defined]
    assert servicer.cleaned
