"""The session stream's guards against an in-process gateway (the hostile-client suite runs the
same attacks against a real ``aiml021 serve``): Hello and idle timeouts, per-device session
quota, and the outbound bound that cuts off a device which does not read."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from tests.integration.cloud._gateway import chunk, hello, running_gateway


async def test_a_stream_without_hello_ends_deadline_exceeded(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, **{"session.hello_timeout_s": 0.3}) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            call = session_pb2_grpc.SessionServiceStub(ch).Connect()
            await asyncio.sleep(0.1)
            assert gw.metrics.open_streams.labels("session")._value.get() == 1
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(call.read(), 5)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "session.hello_timeout_s" in (info.value.details() or "")
        assert gw.metrics.open_streams.labels("session")._value.get() == 0


async def test_an_idle_session_ends_but_a_pinging_one_stays(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, **{"session.idle_timeout_s": 0.4}) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            stub = session_pb2_grpc.SessionServiceStub(ch)
            idle, alive = stub.Connect(), stub.Connect()
            for call, name in ((idle, "idle"), (alive, "alive")):
                await call.write(hello(name))
                assert (await call.read()).WhichOneof("frame") == "welcome"
            t0 = time.monotonic()
            for i in range(8):  # 0.8 s of pings every 0.1 s on one stream only
                await alive.write(session_pb2.ConnectRequest(ping=session_pb2.Ping(nonce=i)))
                assert (await asyncio.wait_for(alive.read(), 5)).pong.nonce == i
                await asyncio.sleep(0.1)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(idle.read(), 5)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "session.idle_timeout_s" in (info.value.details() or "")
            assert time.monotonic() - t0 < 2.0
            alive.cancel()


async def test_sessions_past_the_device_quota_are_refused(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, **{"limits.max_sessions_per_device": 2}) as gw:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as ch:
            stub = session_pb2_grpc.SessionServiceStub(ch)
            calls = [stub.Connect() for _ in range(3)]
            for call in calls[:2]:
                await call.write(hello("cam"))
                assert (await call.read()).WhichOneof("frame") == "welcome"
            await calls[2].write(hello("cam"))
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await asyncio.wait_for(calls[2].read(), 5)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "limits.max_sessions_per_device = 2" in (info.value.details() or "")
            # Another device is not affected; a closed session frees its place.
            other = stub.Connect()
            await other.write(hello("other"))
            assert (await other.read()).WhichOneof("frame") == "welcome"
            calls[0].cancel()
            await asyncio.sleep(0.2)
            again = stub.Connect()
            await again.write(hello("cam"))
            assert (await again.read()).WhichOneof("frame") == "welcome"
            for call in (calls[1], other, again):
                call.cancel()


async def test_a_device_that_does_not_read_is_cut_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The synchronous client in a thread: grpc.aio's client would report its own INTERNAL for
    the write pending when the stream ends, instead of the gateway's status. The cut is logged
    for operators, with the device's pseudonym, not its id (logs are exported)."""
    settings = {"session.max_outbound_bytes": 64 * 1024, "session.outbound_stall_s": 0.3}
    sent = [0]

    def frames() -> Iterator[session_pb2.ConnectRequest]:
        yield hello("cam-secret-17")
        for i in range(100_000):
            yield chunk(f"{i:0200d}", 0, b"x", True)  # answered NOT_FOUND, its id echoed
            sent[0] += 1

    def attack(port: int) -> tuple[grpc.StatusCode, str]:
        # grpc, once grpc.aio is initialised in the process, asks this thread for an event loop;
        # give it one that is closed when the attack ends instead of one left to the collector.
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            return _attack(port)
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    def _attack(port: int) -> tuple[grpc.StatusCode, str]:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            answers = session_pb2_grpc.SessionServiceStub(ch).Connect(flood)
            last, seen = time.monotonic(), 0
            while time.monotonic() - last < 1.0:  # until the gateway stops taking frames
                time.sleep(0.05)
                if sent[0] != seen:
                    last, seen = time.monotonic(), sent[0]
            for _ in answers:  # what was sent before the cut, then the status
                pass
            return answers.code(), answers.details()

    flood = frames()
    caplog.set_level("WARNING", logger="cloud.grpc._session")
    try:
        async with running_gateway(tmp_path, **settings) as gw:
            try:
                code, details = await asyncio.to_thread(attack, gw.port)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
            await asyncio.sleep(0.1)
            still_open = gw.sessions.open_sessions
    finally:
        flood.close()  # now, not whenever the garbage collector finds it
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
    assert "does not read its answers" in details
    assert sent[0] < 100_000 and still_open == 0
    from common.telemetry import device_pseudonym

    (cut,) = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    assert "cam-secret-17" not in cut and device_pseudonym("cam-secret-17") in cut
