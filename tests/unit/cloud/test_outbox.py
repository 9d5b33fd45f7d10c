"""The session's outbound side: an answer too large for the device fails only its request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud.core import InferenceResult, ModelSpec, TensorSpec
from cloud.grpc._outbox import FRAME_OVERHEAD, Outbox, OutboxSink
from common.errors import ErrorCode, ResourceExhausted

SPEC = ModelSpec(
    "rec",
    "1",
    Path("rec.onnx"),
    (TensorSpec("x", "float32", (-1, 3, 48, -1)),),
    (TensorSpec("y", "float32", (-1, -1, -1)),),
    8,
)


def _result(values: int) -> InferenceResult:
    return InferenceResult("rec", "1", {"y": np.zeros((1, 1, values), np.float32)})


def test_an_answer_within_the_limit_is_queued_at_its_size() -> None:
    outbox = Outbox(64 * 1024 * 1024)
    sink = OutboxSink(outbox, max_result_bytes=1024 * 1024)
    sink.result("small", _result(1000), SPEC)
    assert outbox.queued_bytes > 4000 + FRAME_OVERHEAD
    sink.result("edge", _result(250_000), SPEC)  # about 1,000,000 bytes: still within 1 MiB


def test_an_answer_over_the_limit_is_refused_and_nothing_is_queued() -> None:
    # A gRPC client ends the whole stream on a message over its receive limit (4 MiB by
    # default), failing every request of the session: refuse this one answer instead.
    outbox = Outbox(64 * 1024 * 1024)
    sink = OutboxSink(outbox, max_result_bytes=1024 * 1024)
    with pytest.raises(ResourceExhausted) as info:
        sink.result("big", _result(300_000), SPEC)
    assert info.value.code is ErrorCode.RESOURCE_EXHAUSTED
    assert "session.max_result_bytes" in info.value.message
    assert outbox.queued_bytes == 0
    sink.error("big", info.value)  # the error frame itself is small and always goes out
    assert 0 < outbox.queued_bytes < 4096


def test_the_default_limit_is_grpc_s_default_receive_limit() -> None:
    sink = OutboxSink(Outbox(1 << 30))
    assert sink.max_result_bytes == 4 * 1024 * 1024
    with pytest.raises(ResourceExhausted):
        sink.result("v6", _result(1_400_000), SPEC)  # 5.6 MB, like a v6 recognizer line
