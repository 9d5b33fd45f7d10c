"""The real gateway, in-process, for edge tests.

:func:`running_gateway` starts cloud's ``Gateway`` — the data plane over the onnxruntime backend,
``SessionCore`` and ``SessionServicer`` — on 127.0.0.1 and yields a :class:`LiveGateway`. Nothing
of the gateway is replaced; tests see what they need through the gateway's own seams:

- ``records``: every :class:`RequestRecord` the gateway's metadata sink received, so
  :meth:`LiveGateway.computations` counts computations per idempotency key (answers replayed
  from the idempotency store are ``cached``);
- ``telemetry``: the device telemetry events the gateway's telemetry sink received;
- ``audit``: the audit events (refused calls, management actions) the gateway's audit sink
  received (empty when the test passed its own sink, e.g. a ``cloud.stores.AuditLog``);
- ``frames``: the ConnectRequest frames the session service read (a tap on its request stream);
- ``backend``: onnxruntime behind a gate, :meth:`GatedBackend.hold` keeps computations waiting
  (requests accepted, never answered) until :meth:`GatedBackend.release`;
- ``idempotency``: the store; give the same one to the next gateway to model a restart over a
  shared store (as replicas share Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnx
import pytest
from aiml021.session.v1 import session_pb2
from onnx import TensorProto, helper, numpy_helper

from cloud import Gateway
from cloud._settings import GatewaySettings
from cloud.backends import OnnxRuntimeBackend
from cloud.core import (
    AuditEvent,
    AuditSink,
    Backend,
    ModelKey,
    ModelSpec,
    RequestRecord,
    TelemetryEvent,
)
from cloud.stores import MemoryIdempotencyStore
from common.errors import Unavailable
from tests.support.edge_bundle import make_bundle

BUNDLE = "synthetic_branchy"
"""Name the gateway serves the synthetic edge bundle under (its manifest name)."""
VECTOR_MODEL = "m"
"""A full model taking any float32 vector ``[N, D]`` (answers its sum): for stream tests whose
payload sizes matter more than their meaning."""


def vector_model(path: Path) -> Path:
    """``x [N, D] float32 -> ReduceSum over D -> y [N, 1]``, D dynamic."""
    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        "vector_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "D"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        [numpy_helper.from_array(np.array([1], np.int64), "axes")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def gateway_models(root: Path) -> Path:
    """A models directory with the synthetic edge bundle (the weights every ``make_bundle`` with
    the default seed has, so the gateway's tails continue the agent's heads) and the vector
    model. Built once per directory."""
    if not (root / BUNDLE / "manifest.json").exists():
        make_bundle(root / BUNDLE, thresholds=(0.99, 0.99, 0.0))
    if not (root / f"{VECTOR_MODEL}.onnx").exists():
        vector_model(root / f"{VECTOR_MODEL}.onnx")
    return root


@pytest.fixture(scope="session")
def gateway_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`gateway_models` once per test session (import the fixture into a conftest)."""
    return gateway_models(tmp_path_factory.mktemp("gateway_models"))


class GatedBackend(Backend):
    """The onnxruntime backend behind a gate that tests can close; counts batches computed."""

    def __init__(self) -> None:
        self.inner = OnnxRuntimeBackend()
        self.batches = 0
        self._open: asyncio.Event | None = None
        self._held = False
        self._abandoned = False

    def _gate(self) -> asyncio.Event:
        if self._open is None:  # created inside the running loop
            self._open = asyncio.Event()
            if not self._held:
                self._open.set()
        return self._open

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> None:
        """Computations started from now on wait (their requests stay unanswered)."""
        self._held = True
        if self._open is not None:
            self._open.clear()

    def release(self) -> None:
        """Let waiting and later computations run."""
        self._held = False
        if self._open is not None:
            self._open.set()

    def abandon(self) -> None:
        """Fail every held computation (the gateway stops; a crashed one never computes them)."""
        self._abandoned = True
        self.release()

    async def load(self, model: ModelSpec) -> None:
        await self.inner.load(model)

    async def unload(self, key: ModelKey) -> None:
        await self.inner.unload(key)

    async def infer(
        self, key: ModelKey, inputs: Mapping[str, np.ndarray], outputs: Sequence[str]
    ) -> dict[str, np.ndarray]:
        await self._gate().wait()
        if self._abandoned:
            raise Unavailable("the test gateway stopped before computing this batch")
        self.batches += 1
        return await self.inner.infer(key, inputs, outputs)

    async def ready(self) -> bool:
        return await self.inner.ready()

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class FrameLog:
    """ConnectRequest frames the gateway's session service read, by kind."""

    hellos: list[session_pb2.Hello] = field(default_factory=list)
    headers: list[session_pb2.InferHeader] = field(default_factory=list)
    chunks: int = 0
    cancels: list[str] = field(default_factory=list)
    pings: int = 0
    telemetry_batches: int = 0

    def add(self, raw: bytes) -> None:
        msg = session_pb2.ConnectRequest.FromString(raw)
        kind = msg.WhichOneof("frame")
        if kind == "hello":
            self.hellos.append(msg.hello)
        elif kind == "infer_header":
            self.headers.append(msg.infer_header)
        elif kind == "tensor_chunk":
            self.chunks += 1
        elif kind == "cancel":
            self.cancels.append(msg.cancel.request_id)
        elif kind == "ping":
            self.pings += 1
        elif kind == "telemetry_batch":
            self.telemetry_batches += 1


class _SessionTap:
    """Wraps the real SessionServicer.Connect: logs every request frame before the servicer
    reads it; passes every answer through (``inline_payloads=False`` clears that Welcome flag)."""

    def __init__(self, connect: Any, frames: FrameLog, inline_payloads: bool) -> None:
        self._connect = connect
        self.frames = frames
        self._inline = inline_payloads

    async def connect(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[session_pb2.ConnectResponse]:
        async def logged() -> AsyncIterator[bytes]:
            async for raw in request_iterator:
                self.frames.add(raw)
                yield raw

        # aclosing: the servicer's own cleanup runs when the stream ends, not at garbage collection
        async with contextlib.aclosing(self._connect(logged(), context)) as answers:
            async for msg in answers:
                if not self._inline and msg.WhichOneof("frame") == "welcome":
                    msg.welcome.inline_payloads = False
                yield msg


@dataclass
class LiveGateway:
    """A running real gateway and what the tests observe of it."""

    gateway: Gateway
    backend: GatedBackend
    idempotency: MemoryIdempotencyStore
    frames: FrameLog
    records: list[RequestRecord]
    telemetry: list[TelemetryEvent]
    audit: list[AuditEvent] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.gateway.port

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gateway.port}"

    def computations(self) -> dict[str, int]:
        """Answers this gateway computed (not replayed from the idempotency store), per key."""
        counts: dict[str, int] = {}
        for r in self.records:
            if r.status == "OK" and not r.cached and r.idempotency_key:
                counts[r.idempotency_key] = counts.get(r.idempotency_key, 0) + 1
        return counts

    async def stop(self) -> None:
        """The gateway's own shutdown: Drain on every session, in-flight work finishes (within
        ``drain_grace_s``), the port closes. Held computations fail: with the device cut off
        first (:class:`tests.support.proxy.TcpProxy`), this is a crash, nothing computed."""
        if self.backend.held:
            self.backend.abandon()
        await self.gateway.stop()


def gateway_settings(
    models: Path, port: int = 0, tls_dir: Path | None = None, **sections: Any
) -> GatewaySettings:
    """GatewaySettings for tests: loopback, no metrics port, plaintext unless ``tls_dir``.
    ``sections`` are nested overrides, e.g. ``session={"max_chunk_bytes": 4096}``."""
    base: dict[str, Any] = {
        "models_dir": models,
        "server": {"host": "127.0.0.1", "port": port},
        "metrics": {"port": None},
        "tls": {"insecure": True} if tls_dir is None else {"dir": tls_dir},
        "drain_grace_s": 0.5,
        # Stream tests repeat payloads: answers come from the idempotency store or are computed,
        # never from the content-addressed result cache.
        "cache": {"full_models": False, "tail_segments": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return GatewaySettings(**base)


@asynccontextmanager
async def running_gateway(
    models: Path,
    port: int = 0,
    *,
    idempotency: MemoryIdempotencyStore | None = None,
    tls_dir: Path | None = None,
    inline_payloads: bool = True,
    hold: bool = False,
    audit: AuditSink | None = None,
    **sections: Any,
) -> AsyncIterator[LiveGateway]:
    """Run the real gateway over ``models`` (see :func:`gateway_models`) until the block ends.

    ``inline_payloads=False`` clears ``Welcome.inline_payloads``: the gateway as released before
    inline payloads existed, to check that the agent then sends header + chunks.
    ``hold=True`` starts with the backend's gate closed.
    """
    backend = GatedBackend()
    if hold:
        backend.hold()
    store = idempotency if idempotency is not None else MemoryIdempotencyStore()
    records: list[RequestRecord] = []
    telemetry: list[TelemetryEvent] = []
    audited: list[AuditEvent] = []
    gw = Gateway(
        gateway_settings(models, port, tls_dir, **sections),
        backend,
        idempotency=store,
        metadata_sink=records.append,
        telemetry_sink=telemetry.append,
        audit=audit if audit is not None else audited.append,
    )
    frames = FrameLog()
    tap = _SessionTap(gw.sessions.Connect, frames, inline_payloads)
    # handler() registers whatever ``Connect`` is when the gateway starts; grpc needs an async
    # generator function there.
    gw.sessions.Connect = tap.connect  # type: ignore[method-assign]
    live = LiveGateway(gw, backend, store, frames, records, telemetry, audited)
    await gw.start()
    try:
        yield live
    finally:
        await live.stop()


__all__ = [
    "BUNDLE",
    "VECTOR_MODEL",
    "FrameLog",
    "GatedBackend",
    "LiveGateway",
    "gateway_models",
    "gateway_models_dir",
    "gateway_settings",
    "running_gateway",
    "vector_model",
]
