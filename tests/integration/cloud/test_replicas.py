"""Two gateway replicas (``aiml021 serve`` processes, mTLS) behind a real nginx, sharing a real
Redis and PostgreSQL: device sessions spread over both replicas; one replica killed -9 mid-load →
its devices reconnect through the balancer to the other and replay with the same idempotency
keys: every request answered (0 lost), no key computed twice. The device's certificate identity
reaches the gateway through the balancer, and the balancer lets no one in without one."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psycopg
import pytest
from aiml021.common.v1 import tensor_pb2
from aiml021.session.v1 import session_pb2, session_pb2_grpc
from google.rpc import code_pb2
from prometheus_client.parser import text_string_to_metric_families

from common.auth import create_ca, issue_device_cert, write_dev_pki
from tests.integration._services import (  # noqa: F401 (fixtures)
    database_url,
    postgres_server,
    redis_server,
    redis_url,
)
from tests.support.balancer import run_balancer
from tests.support.gateway import VECTOR_MODEL, gateway_models
from tests.support.ports import free_port

DEVICES = [f"dev-{i}" for i in range(8)]
RETRYABLE = {code_pb2.UNAVAILABLE, code_pb2.RESOURCE_EXHAUSTED, code_pb2.DEADLINE_EXCEEDED,
             code_pb2.ABORTED, code_pb2.FAILED_PRECONDITION}  # fmt: skip
"""Answers a device retries with the same key (UNAVAILABLE: a key another replica's crash left
claimed, until the claim expires)."""


@dataclass
class Replica:
    """One ``aiml021 serve`` process on a fixed port (the balancer's upstream)."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    port_file: Path

    def metrics(self) -> dict[str, float]:
        port = json.loads(self.port_file.read_text())["metrics_port"]
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
        return {
            f"{s.name}{json.dumps(s.labels, sort_keys=True)}": s.value
            for family in text_string_to_metric_families(text.decode())
            for s in family.samples
        }

    def sessions(self) -> float:
        return self.metrics().get('aiml021_gateway_open_streams{"kind": "session"}', 0.0)


@contextlib.contextmanager
def replicas(
    tmp: Path, pki: Path, redis: str, database: str, n: int = 2
) -> Iterator[list[Replica]]:
    models = gateway_models(tmp / "models")
    env = {
        **os.environ,
        # a claim the killed replica held expires quickly, so its devices' replays get through
        "AIML021_GATEWAY_IDEMPOTENCY__PENDING_TTL_S": "2",
        "AIML021_GATEWAY_IDEMPOTENCY__WAIT_S": "5",
        "AIML021_GATEWAY_STORES__METADATA_FLUSH_INTERVAL_S": "0.05",
        "AIML021_GATEWAY_CACHE__FULL_MODELS": "false",  # every answer computed or replayed
    }
    started: list[Replica] = []
    try:
        for i in range(n):
            port, port_file = free_port(), tmp / f"replica-{i}.json"
            log = (tmp / f"replica-{i}.log").open("wb")
            proc = subprocess.Popen(
                [sys.executable, "-m", "cloud", "serve", "--models", str(models), "--port",
                 str(port), "--metrics-port", "0", "--port-file", str(port_file), "--tls-dir",
                 str(pki), "--stores", "redis", "--redis-url", redis, "--metadata-url", database],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            log.close()
            started.append(Replica(f"replica-{i}", port, proc, port_file))
        deadline = time.monotonic() + 120
        for r in started:
            while not r.port_file.exists():
                assert r.proc.poll() is None, (tmp / f"{r.name}.log").read_text()
                assert time.monotonic() < deadline, f"{r.name} did not start"
                time.sleep(0.05)
        yield started
    finally:
        for r in started:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        for r in started:
            try:
                r.proc.wait(30)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()


def _creds(pki: Path, device: str) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        (pki / "ca.pem").read_bytes(),
        (pki / f"{device}.key").read_bytes(),
        (pki / f"{device}.pem").read_bytes(),
    )


def _header(rid: str, key: str, payload: bytes) -> session_pb2.ConnectRequest:
    h = session_pb2.InferHeader(request_id=rid, model_name=VECTOR_MODEL, idempotency_key=key,
                                payload=payload, total_bytes=len(payload),
                                payload_digest=hashlib.sha256(payload).digest())  # fmt: skip
    h.encoding.dtype = tensor_pb2.DATA_TYPE_FLOAT32
    h.encoding.shape.extend((1, 8))
    h.encoding.codec.stages.add(kind=tensor_pb2.CODEC_KIND_RAW)
    return session_pb2.ConnectRequest(infer_header=h)


@dataclass
class Device:
    """A device that sends one request at a time, each with its own idempotency key, and replays
    it (new request id, same key) over reconnects until it is answered."""

    name: str
    address: str
    pki: Path
    answers: dict[str, tuple[bool, float]] = field(default_factory=dict)
    """key -> (answer computed for it rather than replayed from the store, the sum answered)"""
    sent: list[str] = field(default_factory=list)
    reconnects: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        channel = grpc.aio.secure_channel(self.address, _creds(self.pki, self.name))
        call: Any = None
        seq = 0
        try:
            while not stop.is_set():
                key = f"{self.name}-{seq}"
                seq += 1
                self.sent.append(key)
                value = float(seq)
                payload = np.full((1, 8), value, np.float32).tobytes()
                attempt = 0
                while key not in self.answers:
                    attempt += 1
                    try:
                        if call is None:
                            call = session_pb2_grpc.SessionServiceStub(channel).Connect()
                            await call.write(session_pb2.ConnectRequest(
                                hello=session_pb2.Hello(device_id=self.name, protocol_version=1)))  # fmt: skip
                            first = await asyncio.wait_for(call.read(), 10)
                            assert first.WhichOneof("frame") == "welcome", first
                        await call.write(_header(f"{key}#{attempt}", key, payload))
                        msg = await asyncio.wait_for(self._answer(call, f"{key}#{attempt}"), 15)
                    except (grpc.aio.AioRpcError, TimeoutError, ConnectionError,
                            asyncio.InvalidStateError):  # fmt: skip
                        if call is not None:
                            call.cancel()
                        call = None
                        self.reconnects += 1
                        await asyncio.sleep(0.1)
                        continue
                    if msg.WhichOneof("frame") == "infer_result":
                        r = msg.infer_result
                        total = (
                            np.frombuffer(r.outputs[0].contents, np.float32)[0] if r.outputs else -1
                        )
                        self.answers[key] = (not r.cached, float(total))
                    else:
                        assert msg.infer_error.status.code in RETRYABLE, msg
                        await asyncio.sleep(0.2)
        finally:
            if call is not None:
                call.cancel()
            await channel.close()

    @staticmethod
    async def _answer(call: Any, rid: str) -> Any:
        while True:
            msg = await call.read()
            if msg is grpc.aio.EOF:
                raise ConnectionError("stream ended")
            kind = msg.WhichOneof("frame")
            if kind in ("infer_result", "infer_error") and getattr(msg, kind).request_id == rid:
                return msg


def _computed_rows(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, count(*) FROM requests WHERE status = 'OK' AND "
            "route = 'cloud' AND idempotency_key <> '' GROUP BY 1"
        ).fetchall()
    return {k: int(n) for k, n in rows}


def _device_ids(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {d for (d,) in conn.execute("SELECT DISTINCT device_id FROM requests")}


async def _load(devices: list[Device], replicas_: list[Replica]) -> Replica:
    """Run the devices; once both replicas hold sessions, kill -9 the one with more; keep the
    load on a while, stop, let every device finish its last request. Returns the killed one."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(d.run(stop)) for d in devices]
    try:
        deadline = time.monotonic() + 60
        while True:
            await asyncio.sleep(0.5)
            held = [r.sessions() for r in replicas_]
            answered = sum(len(d.answers) for d in devices)
            if min(held) > 0 and sum(held) == len(devices) and answered >= 40:
                break
            assert time.monotonic() < deadline, f"sessions per replica {held}, {answered} answered"
        victim = replicas_[int(np.argmax(held))]
        victim.proc.kill()  # kill -9, mid-load: its in-flight requests are never answered by it
        victim.proc.wait()
        before = sum(len(d.answers) for d in devices)
        await asyncio.sleep(3.0)
        assert sum(len(d.answers) for d in devices) > before + 10, "load went on after the kill"
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    return victim


def test_a_replica_killed_mid_load_loses_nothing_and_computes_nothing_twice(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    database_url: str,  # noqa: F811
) -> None:
    pki = tmp_path / "pki"
    write_dev_pki(pki, DEVICES)
    with (
        replicas(tmp_path, pki, redis_url, database_url) as reps,
        run_balancer([r.port for r in reps]) as lb,
    ):
        devices = [Device(name, lb.address, pki) for name in DEVICES]
        victim = asyncio.run(_load(devices, reps))
        survivor = next(r for r in reps if r is not victim)
        assert survivor.proc.poll() is None
        time.sleep(0.5)  # the survivor's metadata writer flushes every 0.05 s
    sent = [k for d in devices for k in d.sent]
    answered = {k: v for d in devices for k, v in d.answers.items()}
    assert len(sent) == len(set(sent)) and set(sent) == set(answered), "0 lost"
    for d in devices:  # each answer is its own request's: value seq * 8 for key dev-i-(seq-1)
        for key, (_, total) in d.answers.items():
            assert total == 8.0 * (int(key.rsplit("-", 1)[1]) + 1), (key, total)
    rows = _computed_rows(database_url)
    twice = {k: n for k, n in rows.items() if n > 1}
    assert twice == {}, f"keys computed twice: {twice}"
    # Rows of the killed replica's last moments die with its metadata buffer; what a device saw
    # covers them: a key the killed replica had finished is replayed from the store (cached), one
    # it had not is computed by the survivor after its claim expired; never both.
    moved = [d for d in devices if d.reconnects]
    assert moved, "the killed replica's devices reconnected"
    for d in moved:
        assert d.sent[-1] in d.answers  # the request in flight at the kill was answered too
    # identity: the certificate each device presented to the balancer, as the gateway saw it
    assert _device_ids(database_url) == set(DEVICES)


def test_the_balancer_admits_no_device_without_a_certificate_of_the_gateways_ca(
    tmp_path: Path,
    redis_url: str,  # noqa: F811
    database_url: str,  # noqa: F811
) -> None:
    pki = tmp_path / "pki"
    write_dev_pki(pki, ["dev-ok"])
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    other_ca = create_ca("another CA")
    issue_device_cert(other_ca, "dev-ok").write(stranger, "dev-ok")
    with (
        replicas(tmp_path, pki, redis_url, database_url, n=1) as reps,
        run_balancer([r.port for r in reps]) as lb,
    ):
        ca = (pki / "ca.pem").read_bytes()
        attempts = {
            "no client certificate": grpc.ssl_channel_credentials(ca),
            "a certificate of another CA": grpc.ssl_channel_credentials(
                ca, (stranger / "dev-ok.key").read_bytes(), (stranger / "dev-ok.pem").read_bytes()
            ),
        }

        async def hello(creds: grpc.ChannelCredentials, claim: str = "dev-ok") -> Any:
            async with grpc.aio.secure_channel(lb.address, creds) as ch:
                call = session_pb2_grpc.SessionServiceStub(ch).Connect()
                await call.write(session_pb2.ConnectRequest(
                    hello=session_pb2.Hello(device_id=claim, protocol_version=1)))  # fmt: skip
                return await asyncio.wait_for(call.read(), 10)

        for why, creds in attempts.items():
            with pytest.raises(grpc.aio.AioRpcError) as err:
                asyncio.run(hello(creds))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, why
        welcome = asyncio.run(hello(_creds(pki, "dev-ok")))
        assert welcome.WhichOneof("frame") == "welcome" and welcome.welcome.device_id == "dev-ok"
        # through the balancer a device is still only what its certificate says
        with pytest.raises(grpc.aio.AioRpcError) as err:
            asyncio.run(hello(_creds(pki, "dev-ok"), claim="dev-someone-else"))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
