"""The agent turns the gateway's failures into our errors in one place each: a per-request
google.rpc.Status (InferError) and a failed call (grpc.RpcError)."""

from __future__ import annotations

import grpc
import pytest
from aiml021.session.v1 import session_pb2
from google.rpc import code_pb2

from common.errors import ErrorCode, Internal, NotFound, PermissionDenied
from edge_agent._convert import CloudFailure, error_from_rpc_error, incoming


def _failure(code: int) -> CloudFailure:
    msg = session_pb2.ConnectResponse()
    msg.infer_error.request_id = "r"
    msg.infer_error.status.code = code
    msg.infer_error.status.message = "why"
    out = incoming(msg)
    assert isinstance(out, CloudFailure)
    return out


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_every_status_code_of_an_infer_error_is_ours(code: ErrorCode) -> None:
    assert _failure(code_pb2.Code.Value(code.value)).code is code


def test_an_unknown_status_code_is_internal() -> None:
    assert _failure(code_pb2.UNKNOWN).code is ErrorCode.INTERNAL
    assert _failure(99).code is ErrorCode.INTERNAL


class _RpcError(grpc.RpcError):
    def __init__(self, status: grpc.StatusCode, details: str) -> None:
        self._status, self._details = status, details

    def code(self) -> grpc.StatusCode:
        return self._status

    def details(self) -> str:
        return self._details


def test_a_failed_call_becomes_our_error_naming_the_gateway() -> None:
    err = error_from_rpc_error(_RpcError(grpc.StatusCode.PERMISSION_DENIED, "not yours"))
    assert isinstance(err, PermissionDenied) and err.message == "gateway: not yours"
    assert isinstance(error_from_rpc_error(_RpcError(grpc.StatusCode.NOT_FOUND, "")), NotFound)
    assert isinstance(error_from_rpc_error(_RpcError(grpc.StatusCode.UNIMPLEMENTED, "x")), Internal)
    assert isinstance(error_from_rpc_error(grpc.RpcError()), Internal)
