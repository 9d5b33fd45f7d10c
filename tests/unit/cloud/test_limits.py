"""Limits derived before anything is read: the largest request the served models can take, and
status messages bounded whatever the client sent."""

from __future__ import annotations

from pathlib import Path

import grpc

from cloud.core import ModelSpec, TensorSpec, largest_request_bytes
from cloud.core._validate import wire_bytes_per_element
from cloud.grpc._errors import MAX_MESSAGE_CHARS, bounded, detach
from common.errors import NotFound


def _spec(name: str, shape: tuple[int, ...], batch: int = 8, dtype: str = "float32") -> ModelSpec:
    return ModelSpec(name, "1", Path(f"{name}.onnx"), (TensorSpec("x", dtype, shape),), (), batch)


def test_largest_request_is_a_full_batch_of_the_largest_input_as_sent_at_most() -> None:
    small, big = _spec("a", (-1, 4)), _spec("b", (-1, 32, 14, 14), batch=64)
    assert largest_request_bytes([small]) == 8 * 4 * 4
    assert largest_request_bytes([small, big]) == 64 * 32 * 14 * 14 * 4
    assert largest_request_bytes([_spec("i", (-1, 4), dtype="int32")]) == 8 * 4 * 10  # varints
    assert largest_request_bytes([small, _spec("c", (-1, -1))]) is None  # unbounded
    assert largest_request_bytes([]) == 0


def test_typed_contents_take_at_most_a_varint_per_element() -> None:
    sizes = {d: wire_bytes_per_element(d) for d in ("bool", "uint8", "uint64", "int8", "float16")}
    assert sizes == {"bool": 1, "uint8": 5, "uint64": 10, "int8": 10, "float16": 2}
    assert wire_bytes_per_element("float64") == 8


def test_status_messages_are_bounded_and_say_how_long_they_were() -> None:
    assert bounded("short") == "short"
    long = bounded("x" * 20_000)
    assert len(long) <= MAX_MESSAGE_CHARS and long.endswith("(20000 characters)")
    status, message = detach(NotFound(f"unknown model {'n' * 10_000!r}"))
    assert status is grpc.StatusCode.NOT_FOUND
    assert len(message) <= MAX_MESSAGE_CHARS and message.startswith("unknown model 'nnn")
