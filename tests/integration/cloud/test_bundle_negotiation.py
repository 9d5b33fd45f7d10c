"""Head/tail versions negotiated in Hello: a device declares the bundle versions its heads come
from; the gateway answers with the tail it serves for each, or ends the stream with
FAILED_PRECONDITION naming the versions it does serve; malformed or oversized declarations are
INVALID_ARGUMENT. The edge agent declares its pinned version."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import grpc
import numpy as np
import pytest
from aiml021.session.v1 import session_pb2

from cloud import Gateway
from cloud._settings import GatewaySettings
from cloud.core import ModelRepository, specs_from_bundle
from common.errors import FailedPrecondition
from common.settings import nest
from edge_agent import EdgeSettings
from edge_agent import _convert as conv
from edge_agent._stream import SessionClient as AgentSession
from tests.integration.cloud._gateway import SessionClient, models_dir


def _gateway(tmp: Path) -> Gateway:
    """tiny_cnn served in versions 1 and 2."""
    specs = specs_from_bundle(models_dir(tmp) / "tiny_cnn", 64)
    repo = ModelRepository([*specs, *(dataclasses.replace(s, version="2") for s in specs)])
    settings = GatewaySettings(**nest({"models_dir": models_dir(tmp), "server.port": 0,
                                       "tls.insecure": True, "metrics.port": None}))  # fmt: skip
    return Gateway(settings, repository=repo)


def _hello(*bundles: tuple[str, str]) -> session_pb2.ConnectRequest:
    h = session_pb2.Hello(device_id="dev-n", protocol_version=1)
    for name, version in bundles:
        h.bundles.add(model_name=name, version=version)
    return session_pb2.ConnectRequest(hello=h)


async def _open(gw: Gateway, hello: session_pb2.ConnectRequest) -> SessionClient:
    client = SessionClient(grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}"))
    await client.send(hello)
    return client


async def test_an_old_head_gets_its_own_tail(tmp_path: Path) -> None:
    async with _gateway(tmp_path) as gw:
        client = await _open(gw, _hello(("tiny_cnn", "1")))
        first = await asyncio.wait_for(client.call.read(), 10)
        assert [(t.model_name, t.version) for t in first.welcome.tails] == [("tiny_cnn", "1")]
        x = np.zeros((1, 1, 28, 28), np.float32)
        answer = await client.infer("r1", x, version="1")
        assert answer.infer_result.served_model_version == "1"
        await client.call.done_writing()


async def test_a_head_without_a_tail_is_refused_naming_the_served_versions(tmp_path: Path) -> None:
    async with _gateway(tmp_path) as gw:
        client = await _open(gw, _hello(("tiny_cnn", "2"), ("tiny_cnn", "0.9")))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.call.read()
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "'0.9'" in (err.value.details() or "") and "['1', '2']" in (
            err.value.details() or ""
        )


@pytest.mark.parametrize(
    "bundles",
    [
        [("tiny_cnn", "1")] * 33,
        [("", "1")],
        [("tiny_cnn", "")],
        [("tiny_cnn", "v" * 129)],
        [("m" * 257, "1")],
    ],
    ids=["too-many", "no-name", "no-version", "long-version", "long-name"],
)
async def test_malformed_declarations_are_invalid_argument(
    tmp_path: Path, bundles: list[tuple[str, str]]
) -> None:
    async with _gateway(tmp_path) as gw:
        client = await _open(gw, _hello(*bundles))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.call.read()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_agent_declares_its_pinned_head_version() -> None:
    frame = conv.hello("dev", "cam", "0.1", 8, 1024, bundles=[("fmnist_branchy", "1.0.0")])
    assert [(b.model_name, b.version) for b in frame.hello.bundles] == [("fmnist_branchy", "1.0.0")]
    assert not conv.hello("dev", "cam", "0.1", 8, 1024).hello.bundles


async def test_the_agent_renegotiates_its_declaration_and_keeps_it_when_refused(
    tmp_path: Path,
) -> None:
    async with _gateway(tmp_path) as gw:
        settings = EdgeSettings.model_validate(
            {
                "gateway": f"127.0.0.1:{gw.port}",
                "tls": {"insecure": True},
                "session": {"backoff_initial_s": 0.02, "backoff_max_s": 0.1},
            }
        )
        async with AgentSession(
            settings.gateway or "", settings, bundles=[("tiny_cnn", "1")]
        ) as client:
            assert await client.wait_connected(10)
            await client.renegotiate([("tiny_cnn", "2")], 10)
            assert client.bundles == [("tiny_cnn", "2")] and client.metrics.sessions == 2
            with pytest.raises(FailedPrecondition, match="'3'"):
                await client.renegotiate([("tiny_cnn", "3")], 10)
            assert client.bundles == [("tiny_cnn", "2")]
            assert await client.wait_connected(10)  # back on the declaration it had
