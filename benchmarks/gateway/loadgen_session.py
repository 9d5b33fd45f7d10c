"""Closed-loop load generator on one session stream (our SessionService stubs).

    python -m benchmarks.gateway.loadgen_session '{"url":..., "model":..., "concurrency":32,
        "seconds":3, "warmup":0.5}'

``concurrency`` requests stay in flight, multiplexed on one stream; each is one InferHeader
carrying raw float32 [1,1,28,28] inline (``InferHeader.payload``) when the gateway's Welcome
offers inline payloads, else an InferHeader plus one TensorChunk (as the edge agent does);
``"inline": false`` forces the two-frame form. Byte credits from the gateway are honoured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import grpc
import numpy as np
from aiml021.common.v1 import tensor_pb2
from aiml021.session.v1 import session_pb2, session_pb2_grpc

from benchmarks.gateway.loadgen_triton import _stats


async def run(cfg: dict[str, Any]) -> dict[str, Any]:
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    data = x.tobytes()
    conc, seconds, warmup = cfg["concurrency"], cfg["seconds"], cfg.get("warmup", 0.5)
    channel = grpc.aio.insecure_channel(cfg["url"])
    call = session_pb2_grpc.SessionServiceStub(channel).Connect()
    await call.write(
        session_pb2.ConnectRequest(hello=session_pb2.Hello(device_id="bench", protocol_version=1))
    )
    welcome = await call.read()
    credit = welcome.welcome.initial_credit_bytes
    inline = welcome.welcome.inline_payloads and cfg.get("inline", True)
    credit_event = asyncio.Event()
    lat: list[float] = []
    sent: dict[str, float] = {}
    start = time.perf_counter()
    t_measure = start + warmup
    t_end = t_measure + seconds
    seq = 0
    done = asyncio.Event()
    wake = asyncio.Event()
    to_send = conc

    def frames(rid: str) -> list[session_pb2.ConnectRequest]:
        h = session_pb2.ConnectRequest()
        hh = h.infer_header
        hh.request_id = rid
        hh.model_name = cfg["model"]
        hh.total_bytes = len(data)
        hh.encoding.dtype = tensor_pb2.DATA_TYPE_FLOAT32
        hh.encoding.shape.extend(x.shape)
        hh.encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
        if inline:
            hh.payload = data
            return [h]
        c = session_pb2.ConnectRequest()
        c.tensor_chunk.request_id = rid
        c.tensor_chunk.data = data
        c.tensor_chunk.last = True
        return [h, c]

    async def writer() -> None:
        nonlocal seq, credit, to_send
        while not done.is_set():
            while to_send and time.perf_counter() < t_end:
                while credit < len(data):
                    credit_event.clear()
                    await credit_event.wait()
                seq += 1
                rid = str(seq)
                sent[rid] = time.perf_counter()
                for frame in frames(rid):
                    await call.write(frame)
                credit -= len(data)
                to_send -= 1
            wake.clear()
            await wake.wait()

    async def reader() -> None:
        nonlocal credit, to_send
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                return
            kind = msg.WhichOneof("frame")
            if kind == "credit":
                credit += msg.credit.bytes
                credit_event.set()
                continue
            if kind not in ("infer_result", "infer_error"):
                continue
            if kind == "infer_error":
                raise RuntimeError(str(msg.infer_error.status))
            now = time.perf_counter()
            t0 = sent.pop(msg.infer_result.request_id)
            if t0 >= t_measure and now <= t_end:
                lat.append(now - t0)
            if now < t_end:
                to_send += 1
                wake.set()
            elif not sent:
                done.set()
                wake.set()
                return

    w = asyncio.get_running_loop().create_task(writer())
    await reader()
    await w
    await call.done_writing()
    await channel.close()
    return {**_stats(lat, seconds), "inline": bool(inline)}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(json.loads(sys.argv[1])))))
