"""The core without any transport: repository, validation, idempotency, session reassembly and
credits, codec decoding, and the one error table."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import grpc
import numpy as np
import pytest

from cloud.batching import BatcherConfig, DynamicBatching
from cloud.core import (
    Backend,
    ByteBudget,
    CacheEntry,
    Chunk,
    DataPlane,
    InferenceRequest,
    ModelKey,
    ModelRepository,
    ModelSpec,
    PayloadFormat,
    RequestHeader,
    SessionCore,
    SessionLimits,
    TensorSpec,
    decode_payload,
    scan_models_dir,
)
from cloud.grpc import STATUS_BY_CODE
from cloud.stores import MemoryIdempotencyStore, MemoryResultCache
from common.errors import (
    AimlError,
    ErrorCode,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from tests.support.tiny_cnn import build_bundle, build_full_onnx

SPEC = ModelSpec(
    "m",
    "1",
    Path("m.onnx"),
    (TensorSpec("x", "float32", (-1, 4)),),
    (TensorSpec("y", "float32", (-1, 4)),),
    8,
)


class _Double(Backend):
    def __init__(self) -> None:
        self.calls = 0

    async def load(self, model: ModelSpec) -> None: ...

    async def unload(self, key: ModelKey) -> None: ...

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        self.calls += 1
        return {"y": inputs["x"] * 2}

    async def ready(self) -> bool:
        return True

    async def close(self) -> None: ...


async def _plane(**kw: object) -> tuple[DataPlane, _Double]:
    backend = _Double()
    batchers = DynamicBatching(BatcherConfig(max_batch_size=8))
    dp = DataPlane(ModelRepository([SPEC]), backend, batchers, **kw)  # type: ignore[arg-type]
    await dp.start()
    return dp, backend


def test_every_error_code_maps_to_a_grpc_status() -> None:
    assert set(STATUS_BY_CODE) == set(ErrorCode)
    assert STATUS_BY_CODE[ErrorCode.RESOURCE_EXHAUSTED] is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_repository_scans_bundles_and_bare_onnx(tmp_path: Path) -> None:
    build_bundle(tmp_path / "tiny_cnn")
    build_full_onnx(tmp_path / "plain.onnx")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{}")
    repo = ModelRepository(scan_models_dir(tmp_path, 16))
    assert [s.name for s in repo.specs()] == ["plain", "tiny_cnn", "tiny_cnn.cut1"]
    assert repo.resolve_cut("tiny_cnn", "", "cut1").segment == "tail_cut1"
    assert repo.resolve("plain").inputs[0].shape == (-1, 1, 28, 28)
    with pytest.raises(NotFound, match="cut points: cut1"):
        repo.resolve_cut("tiny_cnn", "", "cut7")
    with pytest.raises(NotFound, match="versions: 1"):
        repo.resolve("tiny_cnn", "2")
    assert scan_models_dir(tmp_path / "missing", 1) == []


async def test_dataplane_validates_and_computes() -> None:
    dp, _ = await _plane()
    r = await dp.infer(InferenceRequest("m", "", {"x": np.ones((2, 4), np.float32)}))
    np.testing.assert_array_equal(r.outputs["y"], np.full((2, 4), 2, np.float32))
    bad = [
        ({"x": np.ones((1, 4), np.float64)}, "dtype"),
        ({"x": np.ones((1, 5), np.float32)}, "shape"),
        ({"x": np.ones((9, 4), np.float32)}, "max batch size"),
        ({"x": np.ones((1, 4), np.float32), "q": np.ones(1)}, "unknown input"),
        ({}, "missing input"),
    ]
    for inputs, words in bad:
        with pytest.raises(InvalidArgument, match=words):
            dp.submit(InferenceRequest("m", "", inputs))
    assert dp.model_ready("m") and not dp.model_ready("zz")
    await dp.close()


async def test_idempotency_store_semantics() -> None:
    store = MemoryIdempotencyStore(max_keys=10)
    dp, backend = await _plane(idempotency=store)
    x = {"x": np.ones((1, 4), np.float32)}
    req = InferenceRequest("m", "", x, idempotency_key="k", payload_digest=b"a")
    a, b = await asyncio.gather(dp.infer(req), dp.infer(req))  # concurrent duplicates share work
    c = await dp.infer(req)
    assert backend.calls == 1 and c.cached and (a.cached or b.cached)
    with pytest.raises(FailedPrecondition):
        await dp.infer(InferenceRequest("m", "", x, idempotency_key="k", payload_digest=b"b"))
    cache = MemoryResultCache(max_entries=1)
    entry = CacheEntry.of(c)
    await cache.put("m:1", "a" * 64, entry)
    await cache.put("m:1", "b" * 64, entry)
    assert await cache.get("m:1", "a" * 64) is None and await cache.get("m:1", "b" * 64) is entry
    await dp.close()


class _Sink:
    def __init__(self) -> None:
        self.results: list[str] = []
        self.errors: list[tuple[str, AimlError]] = []
        self.credits: list[tuple[int, int]] = []

    def result(self, request_id: str, result: object, spec: object) -> None:
        self.results.append(request_id)

    def error(self, request_id: str, error: AimlError) -> None:
        self.errors.append((request_id, error))

    def credit(self, nbytes: int, requests: int) -> None:
        self.credits.append((nbytes, requests))


async def _until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait until ``done()`` holds (answers arrive from worker threads; no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not done():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class _RefusingSink(_Sink):
    """Refuses to send answers of requests named ``big*``, as the gRPC sink refuses answers over
    ``session.max_result_bytes``."""

    def result(self, request_id: str, result: object, spec: object) -> None:
        if request_id.startswith("big"):
            raise ResourceExhausted(f"answer of {request_id} exceeds session.max_result_bytes")
        super().result(request_id, result, spec)


async def test_an_answer_the_transport_cannot_send_fails_only_its_request() -> None:
    dp, _ = await _plane()
    statuses: dict[str, str] = {}
    dp.observers.append(lambda req, status, result: statuses.__setitem__(req.request_id, status))
    limits = SessionLimits(64, 16, 8, 64, 5.0, 20.0)
    sink = _RefusingSink()
    core = SessionCore(dp, limits, ByteBudget(1000), sink, "dev")
    data = np.ones((1, 4), np.float32).tobytes()
    for rid in ("r0", "big1", "r2"):
        core.on_header(_inline(rid, data))
    await _until(lambda: len(sink.results) + len(sink.errors) == 3)
    assert sink.results == ["r0", "r2"]
    [(rid, err)] = sink.errors
    assert rid == "big1" and err.code is ErrorCode.RESOURCE_EXHAUSTED
    await _until(lambda: len(statuses) == 3)
    assert statuses == {"r0": "OK", "big1": "RESOURCE_EXHAUSTED", "r2": "OK"}
    # the refused request is finished like any other: nothing left in flight, the session goes on
    assert core.inflight == 0 and core.buffered_bytes == 0
    core.on_header(_inline("r3", data))
    await _until(lambda: sink.results == ["r0", "r2", "r3"])
    core.close()
    await dp.close()


def _header(rid: str, total: int = 16) -> RequestHeader:
    return RequestHeader(rid, "m", "", "", PayloadFormat("float32", (1, 4), (1,)), total)


async def test_session_credits_and_budget_accounting() -> None:
    dp, _ = await _plane()
    limits = SessionLimits(64, 16, 8, 64, 5.0, 20.0)
    budget = ByteBudget(1000)
    sink = _Sink()
    core = SessionCore(dp, limits, budget, sink, "dev")
    data = np.ones((1, 4), np.float32).tobytes()
    for i in range(4):
        core.on_header(_header(f"r{i}"))
        core.on_chunk(Chunk(f"r{i}", 0, data, True))
    assert budget.used == 0 and core.buffered_bytes == 0
    await _until(lambda: len(sink.results) + len(sink.errors) == 4)
    assert sink.results == ["r0", "r1", "r2", "r3"] and not sink.errors
    assert sum(c[0] for c in sink.credits) == 64  # every consumed byte credited back (in quarters)
    assert sum(c[1] for c in sink.credits) == 4
    # A chunk beyond the remaining credit is refused without buffering.
    core.on_header(_header("big", total=64))
    core.on_chunk(Chunk("big", 0, b"\x00" * 16, False))
    assert core.buffered_bytes == 64 and budget.used == 64
    core.on_cancel("big")
    assert core.buffered_bytes == 0 and budget.used == 0
    core.close()
    await dp.close()


def _inline(rid: str, payload: bytes, total: int | None = None) -> RequestHeader:
    h = _header(rid, len(payload) if total is None else total)
    h.inline_payload = payload
    return h


async def test_session_inline_payload_completes_in_one_frame_and_counts_credit() -> None:
    dp, _ = await _plane()
    limits = SessionLimits(64, 16, 8, 64, 5.0, 20.0)
    budget = ByteBudget(1000)
    sink = _Sink()
    core = SessionCore(dp, limits, budget, sink, "dev")
    data = np.ones((1, 4), np.float32).tobytes()
    for i in range(4):
        core.on_header(_inline(f"r{i}", data))
    # Completed at once: nothing stays buffered, no reassembly timer runs.
    assert budget.used == 0 and core.buffered_bytes == 0
    await _until(lambda: len(sink.results) + len(sink.errors) == 4)
    assert sink.results == ["r0", "r1", "r2", "r3"] and not sink.errors
    # Inline bytes are consumed from the credit and granted back exactly like chunk bytes.
    assert sum(c[0] for c in sink.credits) == 64
    assert sum(c[1] for c in sink.credits) == 4
    core.close()
    await dp.close()


async def test_session_inline_payload_is_validated_like_chunks() -> None:
    dp, _ = await _plane()
    limits = SessionLimits(32, 16, 8, 40, 5.0, 20.0)
    sink = _Sink()
    core = SessionCore(dp, limits, ByteBudget(1000), sink, "dev")
    data = np.ones((1, 4), np.float32).tobytes()
    core.on_header(_inline("len", data, total=20))  # total_bytes disagrees with the payload
    core.on_header(_inline("huge", b"\x00" * 33, total=33))  # over max_request_bytes
    core.on_header(_inline("chunky", b"\x00" * 20))  # over max_chunk_bytes
    core.on_header(_inline("short", data[:12]))  # 12 bytes cannot hold a (1, 4) float32 tensor
    h = _inline("fmt", data)
    h.payload = PayloadFormat("float32", (1, 5), (1,))  # shape the model does not take
    core.on_header(h)
    # "short" fails only once its decode (off the event loop) has run: wait for every answer.
    await _until(lambda: len(sink.errors) == 5)
    errors = dict(sink.errors)
    assert isinstance(errors["len"], InvalidArgument)
    assert "carries 16 bytes but total_bytes is 20" in errors["len"].message
    assert errors["huge"].code is ErrorCode.RESOURCE_EXHAUSTED
    assert "max_request_bytes" in errors["huge"].message
    assert "max_chunk_bytes" in errors["chunky"].message
    assert isinstance(errors["short"], InvalidArgument)
    assert "shape" in errors["fmt"].message
    assert not sink.results and core.inflight == 0 and core.buffered_bytes == 0
    core.close()
    await dp.close()


async def test_session_inline_payload_beyond_credit_is_refused() -> None:
    dp, _ = await _plane()
    limits = SessionLimits(64, 64, 8, 64, 5.0, 20.0)
    sink = _Sink()
    core = SessionCore(dp, limits, ByteBudget(1000), sink, "dev")
    core.on_header(_header("big", total=64))
    core.on_chunk(Chunk("big", 0, b"\x00" * 48, False))  # 16 bytes of credit left
    core.on_header(_inline("over", b"\x00" * 20))
    [(rid, err)] = sink.errors
    assert rid == "over" and err.code is ErrorCode.RESOURCE_EXHAUSTED
    assert "byte credit" in err.message
    assert core.inflight == 1 and core.buffered_bytes == 64  # only "big" holds memory
    core.close()
    await dp.close()


async def test_session_chunk_after_inline_payload_fails_the_request() -> None:
    dp, _ = await _plane()
    limits = SessionLimits(64, 16, 8, 64, 5.0, 20.0)
    sink = _Sink()
    core = SessionCore(dp, limits, ByteBudget(1000), sink, "dev")
    data = np.ones((1, 4), np.float32).tobytes()
    core.on_header(_inline("r", data))
    core.on_chunk(Chunk("r", 0, data, True))
    await _until(lambda: bool(sink.results or sink.errors))
    await asyncio.sleep(0.05)  # a second answer, were there one, would come from the same batch
    assert sink.results == []  # one answer per request: the error
    [(rid, err)] = sink.errors
    assert rid == "r" and isinstance(err, InvalidArgument)
    assert "no TensorChunk may follow an inline payload" in err.message
    assert core.inflight == 0
    core.close()
    await dp.close()


def test_codec_frames_are_decoded_with_limits() -> None:
    from common import codecs

    x = np.random.default_rng(0).random((1, 8, 4, 4), dtype=np.float32)
    frame = codecs.encode(x, "raw")
    fmt = PayloadFormat("float32", x.shape, (1,))
    np.testing.assert_array_equal(decode_payload(frame, fmt, 1 << 20), x)
    np.testing.assert_array_equal(decode_payload(x.tobytes(), fmt, 1 << 20), x)
    with pytest.raises(InvalidArgument, match="over the limit"):
        decode_payload(frame, fmt, 100)
    with pytest.raises(InvalidArgument):
        decode_payload(b"\x00garbage", fmt, 1 << 20)
    q = codecs.encode(x, "int8")
    wrong = PayloadFormat("float32", (1, 8, 2, 8), (3,), "int8")
    with pytest.raises(InvalidArgument, match="header declared"):
        decode_payload(q, wrong, 1 << 20)
