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


def test_session_frames_with_over_long_request_ids_are_refused() -> None:
    from aiml021.session.v1 import session_pb2

    from cloud.grpc._converters import check_frame_request_id
    from common.errors import InvalidArgument

    ok = session_pb2.ConnectRequest(cancel=session_pb2.Cancel(request_id="r" * 16))
    check_frame_request_id(ok, 16)
    check_frame_request_id(session_pb2.ConnectRequest(ping=session_pb2.Ping()), 16)
    for frame in (
        session_pb2.ConnectRequest(cancel=session_pb2.Cancel(request_id="r" * 17)),
        session_pb2.ConnectRequest(tensor_chunk=session_pb2.TensorChunk(request_id="r" * 17)),
        session_pb2.ConnectRequest(infer_header=session_pb2.InferHeader(request_id="r" * 17)),
    ):
        try:
            check_frame_request_id(frame, 16)
        except InvalidArgument as exc:
            assert "17 bytes exceeds" in exc.message and "rrr" not in exc.message
        else:
            raise AssertionError(f"{frame.WhichOneof('frame')} with a 17-byte id was accepted")
