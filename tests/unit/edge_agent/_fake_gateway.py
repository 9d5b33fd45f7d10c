"""A minimal SessionService for testing the edge agent over real sockets.

It implements the contract's essentials: Hello -> Welcome (device id from the client certificate
under mTLS), chunk reassembly with offset checks, idempotency by key (a key is computed at most
once; repeats are answered from the store with ``cached=True``), an ONNX tail per cut point (or
an echo answer), Ping/Pong, Cancel, Credit, Drain and telemetry collection. The idempotency store
is SQLite so a gateway restarted on the same file keeps its memory (durability tests).

Run standalone: ``python -m tests.unit.edge_agent._fake_gateway --port 0 --store DB [--bundle B]``
prints ``PORT <n>`` once serving.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from aiml021.common.v1 import request_pb2
from aiml021.session.v1 import session_pb2, session_pb2_grpc
from google.rpc import status_pb2

from common.bundle import load_bundle
from edge_agent._features import decode_features


class Store:
    """Idempotency store: key -> (digest, answer) and a count of computations per key."""

    def __init__(self, path: str = ":memory:") -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, digest BLOB, top INT,"
            " conf REAL, computations INT, deliveries INT)"
        )

    def get(self, key: str) -> tuple[bytes, int, float] | None:
        row = self.db.execute(
            "SELECT digest, top, conf FROM results WHERE key=?", (key,)
        ).fetchone()
        return None if row is None else (bytes(row[0]), int(row[1]), float(row[2]))

    def put(self, key: str, digest: bytes, top: int, conf: float) -> None:
        self.db.execute(
            "INSERT INTO results VALUES (?,?,?,?,1,0) ON CONFLICT(key) DO UPDATE SET"
            " computations = computations + 1",
            (key, digest, top, conf),
        )

    def delivered(self, key: str) -> None:
        self.db.execute("UPDATE results SET deliveries = deliveries + 1 WHERE key=?", (key,))

    def computations(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT key, computations FROM results").fetchall())


class FakeGateway(session_pb2_grpc.SessionServiceServicer):
    def __init__(
        self,
        bundle: Path | None = None,
        store: str = ":memory:",
        delay_s: float = 0.0,
        max_inflight: int = 64,
        initial_credit: int = 0,
        credit_per_request: bool = True,
        ping_interval_s: float = 0.5,
        inline_payloads: bool = False,
    ) -> None:
        self.store = Store(store)
        self.delay_s = delay_s
        self.max_inflight = max_inflight
        self.initial_credit = initial_credit
        self.credit_per_request = credit_per_request
        self.ping_interval_s = ping_interval_s
        self.inline_payloads = inline_payloads
        self.chunks = 0
        self.tails: dict[str, Any] = {}
        if bundle is not None:
            b = load_bundle(bundle)
            self.tails = {c.name: (b.session(c.tail), c.name) for c in b.cut_points}
        self.sessions = itertools.count(1)
        self.hellos: list[session_pb2.Hello] = []
        self.device_ids: list[str] = []
        self.headers: list[session_pb2.InferHeader] = []
        self.telemetry: list[Any] = []
        self.cancels: list[str] = []
        self.pings = 0
        self.hold = asyncio.Event()
        self.hold.set()
        self.queues: list[asyncio.Queue[session_pb2.ConnectResponse | None]] = []
        self._busy: dict[str, asyncio.Future[tuple[int, float]]] = {}

    # helpers for tests
    async def drain_all(self, reconnect_after_s: float = 0.05, alternate: str = "") -> None:
        d = session_pb2.Drain(reason="test drain", alternate_endpoint=alternate)
        d.reconnect_after.FromNanoseconds(int(reconnect_after_s * 1e9))
        d.close_at.FromNanoseconds(int((time.time() + 2.0) * 1e9))
        for q in self.queues:
            await q.put(session_pb2.ConnectResponse(drain=d))

    async def push(self, msg: session_pb2.ConnectResponse) -> None:
        for q in self.queues:
            await q.put(msg)

    def _compute(self, header: session_pb2.InferHeader, payload: bytes) -> tuple[int, float]:
        if header.cut_point in self.tails:
            sess, name = self.tails[header.cut_point]
            x = decode_features(payload)
            logits = sess.run(None, {name: x.astype(np.float32)})[0][0]
            p = np.exp(logits - logits.max())
            p /= p.sum()
            return int(p.argmax()), float(p.max())
        return len(payload) % 10, 0.99

    async def _answer(
        self, header: session_pb2.InferHeader, payload: bytes
    ) -> session_pb2.ConnectResponse:
        rid, key = header.request_id, header.idempotency_key
        if header.deadline.seconds and header.deadline.ToNanoseconds() / 1e9 < time.time():
            return self._error(rid, 4, "deadline passed")
        while key in self._busy:
            await asyncio.shield(self._busy[key])
        known = self.store.get(key)
        if known is not None:
            if known[0] != header.payload_digest:
                return self._error(rid, 6, "idempotency key reused with another payload")
            self.store.delivered(key)
            return self._result(rid, known[1], known[2], cached=True)
        fut: asyncio.Future[tuple[int, float]] = asyncio.get_running_loop().create_future()
        self._busy[key] = fut
        try:
            await self.hold.wait()
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            top, conf = self._compute(header, payload)
            self.store.put(key, header.payload_digest, top, conf)
            self.store.delivered(key)
            fut.set_result((top, conf))
        finally:
            del self._busy[key]
        return self._result(rid, top, conf, cached=False)

    @staticmethod
    def _result(rid: str, top: int, conf: float, cached: bool) -> session_pb2.ConnectResponse:
        r = session_pb2.InferResult(
            request_id=rid,
            top_class=top,
            confidence=conf,
            route=request_pb2.ROUTE_CLOUD,
            served_model_version="fake",
            cached=cached,
        )
        r.timing.cloud_compute.FromMilliseconds(0)
        return session_pb2.ConnectResponse(infer_result=r)

    @staticmethod
    def _error(rid: str, code: int, msg: str) -> session_pb2.ConnectResponse:
        return session_pb2.ConnectResponse(
            infer_error=session_pb2.InferError(
                request_id=rid, status=status_pb2.Status(code=code, message=msg)
            )
        )

    async def Connect(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
        out: asyncio.Queue[session_pb2.ConnectResponse | None] = asyncio.Queue()
        self.queues.append(out)
        tasks: set[asyncio.Task[Any]] = set()

        async def work(header: session_pb2.InferHeader, payload: bytes) -> None:
            msg = await self._answer(header, payload)
            await out.put(msg)
            if self.credit_per_request and self.initial_credit:
                await out.put(
                    session_pb2.ConnectResponse(
                        credit=session_pb2.Credit(bytes=len(payload), requests=1)
                    )
                )

        async def reader() -> None:
            first = True
            partial: dict[str, tuple[session_pb2.InferHeader, bytearray]] = {}
            async for msg in request_iterator:
                kind = msg.WhichOneof("frame")
                if first:
                    if kind != "hello":
                        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "Hello first")
                    first = False
                    self.hellos.append(msg.hello)
                    device = msg.hello.device_id
                    auth = context.auth_context()
                    cn = auth.get("x509_common_name")
                    if cn:
                        device = cn[0].decode()
                    self.device_ids.append(device)
                    w = session_pb2.Welcome(
                        session_id=f"s{next(self.sessions)}",
                        device_id=device,
                        protocol_version=1,
                        initial_credit_bytes=self.initial_credit,
                        inline_payloads=self.inline_payloads,
                    )
                    w.limits.max_inflight_requests = self.max_inflight
                    w.limits.max_chunk_bytes = 4096
                    w.limits.ping_interval.FromNanoseconds(int(self.ping_interval_s * 1e9))
                    await out.put(session_pb2.ConnectResponse(welcome=w))
                elif kind == "infer_header":
                    h = msg.infer_header
                    self.headers.append(h)
                    if h.payload:
                        assert self.inline_payloads, "inline payload to a gateway without them"
                        assert len(h.payload) == h.total_bytes <= 4096
                        t = asyncio.create_task(work(h, h.payload))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                    else:
                        partial[h.request_id] = (h, bytearray())
                elif kind == "tensor_chunk":
                    c = msg.tensor_chunk
                    self.chunks += 1
                    header, buf = partial[c.request_id]
                    assert c.offset == len(buf), "chunk offset gap"
                    buf.extend(c.data)
                    if c.last:
                        del partial[c.request_id]
                        assert len(buf) == header.total_bytes
                        t = asyncio.create_task(work(header, bytes(buf)))
                        tasks.add(t)
                        t.add_done_callback(tasks.discard)
                elif kind == "ping":
                    self.pings += 1
                    await out.put(
                        session_pb2.ConnectResponse(
                            pong=session_pb2.Pong(
                                nonce=msg.ping.nonce, ping_sent_at=msg.ping.sent_at
                            )
                        )
                    )
                elif kind == "cancel":
                    self.cancels.append(msg.cancel.request_id)
                elif kind == "telemetry_batch":
                    self.telemetry.append(msg.telemetry_batch)
            await out.put(None)

        rt = asyncio.create_task(reader())
        try:
            while True:
                msg = await out.get()
                if msg is None:
                    break
                yield msg
                if msg.WhichOneof("frame") == "drain":
                    break
        finally:
            rt.cancel()
            for t in list(tasks):
                t.cancel()
            self.queues.remove(out)


async def start_server(
    gateway: FakeGateway, port: int = 0, server_credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    session_pb2_grpc.add_SessionServiceServicer_to_server(gateway, server)
    addr = f"127.0.0.1:{port}"
    bound = (
        server.add_secure_port(addr, server_credentials)
        if server_credentials is not None
        else server.add_insecure_port(addr)
    )
    await server.start()
    return server, bound


async def _main(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--store", default=":memory:")
    p.add_argument("--bundle", type=Path)
    args = p.parse_args(argv)
    gw = FakeGateway(bundle=args.bundle, store=args.store)
    server, port = await start_server(gw, args.port)
    print(f"PORT {port}", flush=True)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1:]))
