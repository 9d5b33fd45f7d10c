"""common.errors: every code has one class, one google.rpc.Code number and one name."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2

from common.errors import ERROR_TYPES, AimlError, ErrorCode, Internal, error_from_code


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.value)
def test_every_code_round_trips_through_its_name_number_and_class(code: ErrorCode) -> None:
    assert code.rpc_code == code_pb2.Code.Value(code.value)
    assert ErrorCode.from_rpc_code(code.rpc_code) is code
    assert ErrorCode.from_name(code.value) is code
    error = error_from_code(code, "why")
    assert type(error) is ERROR_TYPES[code] and error.code is code and error.message == "why"
    assert ERROR_TYPES[code].code is code


def test_every_error_class_is_in_the_table_once() -> None:
    assert set(ERROR_TYPES) == set(ErrorCode)
    assert len(set(ERROR_TYPES.values())) == len(ErrorCode)
    assert all(issubclass(cls, AimlError) for cls in ERROR_TYPES.values())


@pytest.mark.parametrize("name", ["UNKNOWN", "ABORTED", "UNIMPLEMENTED", "OUT_OF_RANGE", "OK", ""])
def test_names_without_a_code_become_internal(name: str) -> None:
    assert ErrorCode.from_name(name) is ErrorCode.INTERNAL


@pytest.mark.parametrize("number", [0, 2, 10, 11, 12, 17, -1])
def test_rpc_numbers_without_a_code_become_internal(number: int) -> None:
    assert ErrorCode.from_rpc_code(number) is ErrorCode.INTERNAL
    assert isinstance(error_from_code(ErrorCode.from_rpc_code(number), "x"), Internal)
