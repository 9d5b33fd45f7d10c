"""Session streams against an in-process gateway: results, and a precise InferError for each kind
of bad input while the stream (and the server) keeps serving."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from aiml021.common.v1 import tensor_pb2
from google.rpc import code_pb2

from tests.integration.cloud._gateway import (
    SessionClient,
    chunk,
    header,
    hello,
    logits,
    models_dir,
    running_gateway,
)


def _reference(tmp: Path, segment: str, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(models_dir(tmp) / "tiny_cnn" / f"{segment}.onnx"))
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


async def _session(gw) -> tuple[grpc.aio.Channel, SessionClient]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}")
    client = SessionClient(channel)
    await client.send(hello("dev-a"))
    welcome = await client.recv(("welcome",))
    assert welcome.welcome.device_id == "dev-a"
    assert welcome.welcome.initial_credit_bytes > 0
    return channel, client


async def test_full_and_tail_results_match_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    x = rng.random((1, 1, 28, 28), dtype=np.float32)
    feats = _reference(tmp_path, "stage1", x)  # exit1_logits first, cut1 second
    sess = ort.InferenceSession(str(models_dir(tmp_path) / "tiny_cnn" / "stage1.onnx"))
    cut1 = sess.run(["cut1"], {"input": x})[0]
    del feats
    async with running_gateway(tmp_path) as gw:
        channel, c = await _session(gw)
        full = await c.infer("r1", x)
        np.testing.assert_allclose(
            logits(full), _reference(tmp_path, "full", x), rtol=1e-5, atol=1e-5
        )
        assert full.infer_result.route == 2  # ROUTE_CLOUD
        assert 0 < full.infer_result.confidence <= 1
        # The tail for cut1, with the payload split into interleaved chunks of two requests.
        data = cut1.tobytes()
        half = len(data) // 2
        await c.send(header("t1", cut1.shape, cut="cut1"), header("t2", cut1.shape, cut="cut1"))
        await c.send(chunk("t1", 0, data[:half], False), chunk("t2", 0, data[:half], False))
        await c.send(chunk("t2", half, data[half:], True), chunk("t1", half, data[half:], True))
        got = {}
        for _ in range(2):
            m = await c.recv()
            got[m.infer_result.request_id] = logits(m)
        np.testing.assert_allclose(got["t1"], logits(full), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got["t2"], got["t1"])
        await c.call.done_writing()
        await channel.close()


def _bad_cases(x: np.ndarray) -> list[tuple[str, list, int, str]]:
    data = x.tobytes()
    n = len(data)
    return [
        (
            "unknown model",
            [header("b", x.shape, model="nope")],
            code_pb2.NOT_FOUND,
            "unknown model",
        ),
        ("unknown version", [header("b", x.shape, version="9")], code_pb2.NOT_FOUND, "version"),
        ("unknown cut", [header("b", x.shape, cut="cut9")], code_pb2.NOT_FOUND, "cut point"),
        (
            "wrong dtype",
            [header("b", x.shape, dtype=tensor_pb2.DATA_TYPE_INT32)],
            code_pb2.INVALID_ARGUMENT,
            "dtype",
        ),
        ("wrong shape", [header("b", (1, 1, 27, 28))], code_pb2.INVALID_ARGUMENT, "shape"),
        (
            "raw size does not match shape",
            [header("b", x.shape, total=n - 4), chunk("b", 0, data[:-4], True)],
            code_pb2.INVALID_ARGUMENT,
            "",
        ),
        (
            "chunk for unknown request",
            [chunk("zz", 0, data, True)],
            code_pb2.NOT_FOUND,
            "unknown request",
        ),
        (
            "out of order (gap)",
            [header("b", x.shape), chunk("b", 100, data[100:], True)],
            code_pb2.INVALID_ARGUMENT,
            "gap",
        ),
        (
            "overlapping",
            [
                header("b", x.shape),
                chunk("b", 0, data[:200], False),
                chunk("b", 100, data[100:], True),
            ],
            code_pb2.INVALID_ARGUMENT,
            "overlaps",
        ),
        (
            "declared size over limit",
            [header("b", x.shape, total=1 << 40)],
            code_pb2.RESOURCE_EXHAUSTED,
            "max_request_bytes",
        ),
        (
            "more bytes than declared",
            [header("b", x.shape), chunk("b", 0, data + b"xxxx", True)],
            code_pb2.INVALID_ARGUMENT,
            "more than the declared",
        ),
        (
            "last chunk short",
            [header("b", x.shape), chunk("b", 0, data[:100], True)],
            code_pb2.INVALID_ARGUMENT,
            "last chunk",
        ),
        (
            "expired deadline",
            [header("b", x.shape, deadline={"seconds": 1})],
            code_pb2.DEADLINE_EXCEEDED,
            "deadline",
        ),
    ]


async def test_each_bad_input_gets_a_precise_error_and_the_stream_survives(tmp_path: Path) -> None:
    x = np.random.default_rng(2).random((1, 1, 28, 28), dtype=np.float32)
    async with running_gateway(tmp_path) as gw:
        channel, c = await _session(gw)
        for i, (name, frames, code, words) in enumerate(_bad_cases(x)):
            await c.send(*frames)
            m = await c.recv()
            assert m.WhichOneof("frame") == "infer_error", name
            assert m.infer_error.status.code == code, (name, m.infer_error.status)
            assert words in m.infer_error.status.message, (name, m.infer_error.status.message)
            ok = await c.infer(f"ok{i}", x)  # the same stream keeps serving
            assert ok.WhichOneof("frame") == "infer_result", name
        assert gw.sessions.open_sessions == 1
        assert gw.dataplane.metrics.rejections.labels("INVALID_ARGUMENT")._value.get() >= 5
        await channel.close()


async def test_never_finished_request_times_out_and_frees_memory(tmp_path: Path) -> None:
    x = np.random.default_rng(3).random((1, 1, 28, 28), dtype=np.float32)
    async with running_gateway(tmp_path, **{"session.reassembly_timeout_s": 0.2}) as gw:
        channel, c = await _session(gw)
        await c.send(header("slow", x.shape), chunk("slow", 0, x.tobytes()[:100], False))
        m = await c.recv()
        assert m.infer_error.request_id == "slow"
        assert m.infer_error.status.code == code_pb2.DEADLINE_EXCEEDED
        assert "reassembly timeout" in m.infer_error.status.message
        assert gw.sessions.quotas.budget.used == 0
        assert (await c.infer("after", x)).WhichOneof("frame") == "infer_result"
        await channel.close()


async def test_session_and_global_budgets_refuse_excess(tmp_path: Path) -> None:
    x = np.random.default_rng(4).random((1, 1, 28, 28), dtype=np.float32)
    n = x.nbytes
    limits = {
        "session.buffer_bytes": n * 2,
        "session.global_buffer_bytes": n * 3,
        "session.max_chunk_bytes": n,
    }
    async with running_gateway(tmp_path, **limits) as gw:
        channel, c = await _session(gw)
        await c.send(header("a", x.shape), header("b", x.shape), header("c", x.shape))
        m = await c.recv()
        assert m.infer_error.request_id == "c"
        assert m.infer_error.status.code == code_pb2.RESOURCE_EXHAUSTED
        assert gw.sessions.quotas.budget.used == 2 * n
        # A second device takes the last global slot; a third request anywhere is refused.
        channel2, c2 = await _session(gw)
        await c2.send(header("d", x.shape), header("e", x.shape))
        m = await c2.recv()
        assert (m.infer_error.request_id, m.infer_error.status.code) == (
            "e",
            code_pb2.RESOURCE_EXHAUSTED,
        )
        await c.send(chunk("a", 0, x.tobytes(), True))
        assert (await c.recv()).infer_result.request_id == "a"
        await channel.close()
        await channel2.close()


async def test_cancel_frees_the_request_and_sends_no_answer(tmp_path: Path) -> None:
    x = np.random.default_rng(5).random((1, 1, 28, 28), dtype=np.float32)
    async with running_gateway(tmp_path) as gw:
        channel, c = await _session(gw)
        from aiml021.session.v1 import session_pb2

        await c.send(header("k", x.shape), chunk("k", 0, x.tobytes()[:64], False))
        await c.send(session_pb2.ConnectRequest(cancel=session_pb2.Cancel(request_id="k")))
        m = await c.infer("next", x)
        assert m.infer_result.request_id == "next"  # no answer for "k" came first
        assert gw.sessions.quotas.budget.used == 0
        await channel.close()


async def test_garbage_bytes_end_only_that_stream(tmp_path: Path) -> None:
    x = np.random.default_rng(6).random((1, 1, 28, 28), dtype=np.float32)
    async with running_gateway(tmp_path) as gw:
        good_channel, good = await _session(gw)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}")
        raw = channel.stream_stream(
            "/aiml021.session.v1.SessionService/Connect",
            request_serializer=None,
            response_deserializer=None,
        )
        call = raw()
        await call.write(hello("dev-b").SerializeToString())
        await call.read()  # Welcome
        await call.write(b"\xff\xff\xff\xff garbage")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            while True:
                if await call.read() is grpc.aio.EOF:
                    break
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (await good.infer("still", x)).WhichOneof("frame") == "infer_result"
        await channel.close()
        await good_channel.close()


async def test_first_frame_must_be_hello(tmp_path: Path) -> None:
    x = np.random.default_rng(7).random((1, 1, 28, 28), dtype=np.float32)
    async with running_gateway(tmp_path) as gw:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}")
        c = SessionClient(channel)
        await c.send(header("h", x.shape))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await c.recv(("welcome",))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        await channel.close()


async def test_shutdown_sends_drain_and_finishes_in_flight(tmp_path: Path) -> None:
    x = np.random.default_rng(8).random((1, 1, 28, 28), dtype=np.float32)
    async with running_gateway(
        tmp_path, **{"batching.max_queue_delay_ms": 300, "drain_grace_s": 5}
    ) as gw:
        channel, c = await _session(gw)
        await c.send(header("q", x.shape), chunk("q", 0, x.tobytes(), True))
        await asyncio.sleep(0.05)  # the request is queued (the batcher waits to fill)
        stopper = asyncio.get_running_loop().create_task(gw.stop())
        frames = []
        while True:
            m = await asyncio.wait_for(c.call.read(), 10)
            if m is grpc.aio.EOF:
                break
            frames.append(m.WhichOneof("frame"))
        await stopper
        assert "drain" in frames
        assert "infer_result" in frames  # in-flight work finished
        assert frames.index("drain") < frames.index("infer_result")
        await channel.close()


async def test_idempotent_retry_is_not_recomputed(tmp_path: Path) -> None:
    x = np.random.default_rng(9).random((1, 1, 28, 28), dtype=np.float32)
    async with running_gateway(tmp_path) as gw:
        channel, c = await _session(gw)
        d1 = hashlib.sha256(x.tobytes()).digest()  # the gateway checks it against the payload
        a = await c.infer("i1", x, idempotency_key="key-1", payload_digest=d1)
        batches = gw.dataplane.batcher(gw.dataplane.repository.resolve("tiny_cnn").key).batches
        b = await c.infer("i2", x, idempotency_key="key-1", payload_digest=d1)
        assert b.infer_result.cached and not a.infer_result.cached
        np.testing.assert_array_equal(logits(a), logits(b))
        assert (
            gw.dataplane.batcher(gw.dataplane.repository.resolve("tiny_cnn").key).batches == batches
        )
        y = x + 1  # another payload under the same key
        e = await c.infer(
            "i3", y, idempotency_key="key-1", payload_digest=hashlib.sha256(y.tobytes()).digest()
        )
        assert e.infer_error.status.code == code_pb2.FAILED_PRECONDITION
        lie = await c.infer("i4", y, idempotency_key="key-2", payload_digest=d1)
        assert lie.infer_error.status.code == code_pb2.INVALID_ARGUMENT
        await channel.close()


async def test_inline_payload_is_one_frame_with_the_chunked_answer(tmp_path: Path) -> None:
    x = np.random.default_rng(10).random((1, 1, 28, 28), dtype=np.float32)
    data = x.tobytes()
    async with running_gateway(tmp_path) as gw:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}")
        c = SessionClient(channel)
        await c.send(hello("dev-a"))
        welcome = (await c.recv(("welcome",))).welcome
        assert welcome.inline_payloads  # the device may send inline
        chunked = await c.infer("c1", x)
        await c.send(header("n1", x.shape, payload=data))
        inline = await c.recv()
        assert inline.infer_result.request_id == "n1"
        np.testing.assert_array_equal(logits(inline), logits(chunked))
        # Digest and idempotency apply as to chunked payloads (a new input: not in the cache).
        data = np.random.default_rng(12).random(x.shape, dtype=np.float32).tobytes()
        d = hashlib.sha256(data).digest()
        await c.send(header("n2", x.shape, payload=data, idempotency_key="k", payload_digest=d))
        assert not (await c.recv()).infer_result.cached
        await c.send(header("n3", x.shape, payload=data, idempotency_key="k", payload_digest=d))
        assert (await c.recv()).infer_result.cached
        other = bytes(reversed(data))
        e = hashlib.sha256(other).digest()
        await c.send(header("n4", x.shape, payload=other, idempotency_key="k", payload_digest=e))
        assert (await c.recv()).infer_error.status.code == code_pb2.FAILED_PRECONDITION
        # Inline bytes are metered and credited back like chunk bytes.
        assert gw.dataplane.metrics.child(
            gw.dataplane.metrics.bytes_received, "raw"
        )._value.get() >= (5 * len(data))
        await channel.close()


async def test_inline_payload_errors_are_precise(tmp_path: Path) -> None:
    x = np.random.default_rng(11).random((1, 1, 28, 28), dtype=np.float32)
    data = x.tobytes()
    async with running_gateway(tmp_path) as gw:
        channel, c = await _session(gw)
        cases = [
            ("total", [header("a", x.shape, total=len(data) + 4, payload=data)], "total_bytes"),
            ("decode", [header("b", x.shape, total=len(data) - 4, payload=data[:-4])], ""),
            (
                "chunk after inline",
                [header("c", x.shape, payload=data), chunk("c", 0, data, True)],
                "no TensorChunk may follow an inline payload",
            ),
        ]
        for name, frames, words in cases:
            await c.send(*frames)
            m = await c.recv()
            assert m.WhichOneof("frame") == "infer_error", name
            assert m.infer_error.status.code == code_pb2.INVALID_ARGUMENT, (name, m)
            assert words in m.infer_error.status.message, (name, m.infer_error.status.message)
        ok = await c.infer("ok", x)
        assert ok.WhichOneof("frame") == "infer_result"  # the stream keeps serving
        await channel.close()
