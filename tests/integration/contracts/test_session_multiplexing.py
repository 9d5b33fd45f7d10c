"""The session contract multiplexes requests on one stream: interleaved chunks of two requests,
reassembled by request id over a real grpc.aio server on a loopback socket."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator

import grpc
import pytest
from aiml021.common.v1 import request_pb2, tensor_pb2
from aiml021.session.v1 import session_pb2 as pb
from aiml021.session.v1 import session_pb2_grpc as pb_grpc
from google.rpc import code_pb2, status_pb2


class EchoSession(pb_grpc.SessionServiceServicer):
    """Reassembles each request's chunks and answers with the SHA-256 of its payload."""

    async def Connect(
        self, request_iterator: AsyncIterator[pb.ConnectRequest], context: object
    ) -> AsyncIterator[pb.ConnectResponse]:
        pending: dict[str, tuple[int, bytearray]] = {}
        async for frame in request_iterator:
            kind = frame.WhichOneof("frame")
            if kind == "hello":
                yield pb.ConnectResponse(
                    welcome=pb.Welcome(session_id="s1", device_id=frame.hello.device_id)
                )
            elif kind == "infer_header":
                pending[frame.infer_header.request_id] = (
                    frame.infer_header.total_bytes,
                    bytearray(),
                )
            elif kind == "tensor_chunk":
                chunk = frame.tensor_chunk
                if chunk.request_id not in pending:
                    yield _error(chunk.request_id, "unknown request")
                    continue
                total, buf = pending[chunk.request_id]
                if chunk.offset != len(buf):
                    del pending[chunk.request_id]
                    yield _error(
                        chunk.request_id, f"chunk at offset {chunk.offset}, expected {len(buf)}"
                    )
                    continue
                if len(buf) + len(chunk.data) > total:
                    del pending[chunk.request_id]
                    yield _error(chunk.request_id, f"payload exceeds declared {total} bytes")
                    continue
                buf.extend(chunk.data)
                if chunk.last:
                    del pending[chunk.request_id]
                    digest = hashlib.sha256(buf).digest()
                    yield pb.ConnectResponse(
                        infer_result=pb.InferResult(
                            request_id=chunk.request_id,
                            route=request_pb2.ROUTE_CLOUD,
                            outputs=[
                                tensor_pb2.Tensor(
                                    name="sha256",
                                    dtype=tensor_pb2.DATA_TYPE_UINT8,
                                    shape=[32],
                                    contents=digest,
                                )
                            ],
                        )
                    )


def _error(request_id: str, message: str) -> pb.ConnectResponse:
    status = status_pb2.Status(code=code_pb2.INVALID_ARGUMENT, message=message)
    return pb.ConnectResponse(infer_error=pb.InferError(request_id=request_id, status=status))


@pytest.fixture
async def stub() -> AsyncIterator[pb_grpc.SessionServiceStub]:
    server = grpc.aio.server()
    pb_grpc.add_SessionServiceServicer_to_server(EchoSession(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.SessionServiceStub(channel)
    await server.stop(grace=None)


def _chunks(request_id: str, payload: bytes, size: int) -> list[pb.ConnectRequest]:
    frames = []
    for offset in range(0, len(payload), size):
        data = payload[offset : offset + size]
        frames.append(
            pb.ConnectRequest(
                tensor_chunk=pb.TensorChunk(
                    request_id=request_id,
                    offset=offset,
                    data=data,
                    last=offset + size >= len(payload),
                )
            )
        )
    return frames


async def test_interleaving(stub: pb_grpc.SessionServiceStub) -> None:
    a, b = bytes(range(256)) * 40, b"\x07" * 7000
    frames = [pb.ConnectRequest(hello=pb.Hello(device_id="dev-1", protocol_version=1))]
    frames += [
        pb.ConnectRequest(infer_header=pb.InferHeader(request_id="a", total_bytes=len(a))),
        pb.ConnectRequest(infer_header=pb.InferHeader(request_id="b", total_bytes=len(b))),
    ]
    chunks_a, chunks_b = _chunks("a", a, 1000), _chunks("b", b, 900)
    for i in range(max(len(chunks_a), len(chunks_b))):
        frames += chunks_a[i : i + 1] + chunks_b[i : i + 1]
    frames.append(
        pb.ConnectRequest(tensor_chunk=pb.TensorChunk(request_id="ghost", data=b"x", last=True))
    )

    responses = [r async for r in stub.Connect(iter(frames))]

    assert responses[0].WhichOneof("frame") == "welcome"
    results = {
        r.infer_result.request_id: r.infer_result for r in responses if r.HasField("infer_result")
    }
    assert results["a"].outputs[0].contents == hashlib.sha256(a).digest()
    assert results["b"].outputs[0].contents == hashlib.sha256(b).digest()
    errors = [r.infer_error for r in responses if r.HasField("infer_error")]
    assert [(e.request_id, e.status.code) for e in errors] == [("ghost", code_pb2.INVALID_ARGUMENT)]


async def test_out_of_order_chunk_fails_only_its_request(stub: pb_grpc.SessionServiceStub) -> None:
    frames = [
        pb.ConnectRequest(hello=pb.Hello(device_id="dev-1", protocol_version=1)),
        pb.ConnectRequest(infer_header=pb.InferHeader(request_id="a", total_bytes=4)),
        pb.ConnectRequest(infer_header=pb.InferHeader(request_id="b", total_bytes=2)),
        pb.ConnectRequest(
            tensor_chunk=pb.TensorChunk(request_id="a", offset=2, data=b"cd", last=True)
        ),
        pb.ConnectRequest(
            tensor_chunk=pb.TensorChunk(request_id="b", offset=0, data=b"ok", last=True)
        ),
    ]
    responses = [r async for r in stub.Connect(iter(frames))]
    kinds = [
        (r.WhichOneof("frame"), r.infer_error.request_id or r.infer_result.request_id)
        for r in responses[1:]
    ]
    assert kinds == [("infer_error", "a"), ("infer_result", "b")]
    assert "offset 2, expected 0" in responses[1].infer_error.status.message
