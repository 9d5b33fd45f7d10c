"""TLS 1.3 only, on every TLS listener: a real gateway (gRPC and REST) and the issuing CA's
service refuse ``openssl s_client -tls1_2`` and accept ``-tls1_3``. The start-up probe that
enforces it is shown to see a listener that does accept TLS 1.2."""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import (
    GRPC_CIPHER_ENV,
    CaServer,
    EnrollmentServicer,
    assert_tls13_only,
    tls12_accepted,
    write_dev_pki,
)
from common.errors import InvalidArgument
from tests.integration.cloud._gateway import models_dir


def s_client(port: int, version: str, pki: Path, device: str | None = "dev-1") -> tuple[int, str]:
    cmd = [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        version,
        "-CAfile",
        str(pki / "ca.pem"),
    ]
    if device is not None:
        cmd += ["-cert", str(pki / f"{device}.pem"), "-key", str(pki / f"{device}.key")]
    done = subprocess.run(cmd, input=b"", capture_output=True, timeout=30, check=False)
    return done.returncode, (done.stdout + done.stderr).decode("utf-8", "replace")


def assert_refused_12_accepted_13(port: int, pki: Path, device: str | None = "dev-1") -> None:
    rc, out = s_client(port, "-tls1_2", pki, device)
    assert rc != 0, out
    assert "Cipher is (NONE)" in out and "TLSv1.2, Cipher is" not in out, out
    _, out = s_client(port, "-tls1_3", pki, device)
    # (the exit status reflects how the server closed the idle connection afterwards)
    assert "New, TLSv1.3, Cipher is TLS_" in out, out
    assert "Verify return code: 0 (ok)" in out, out


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    write_dev_pki(d, ["dev-1"])
    return d


async def test_gateway_grpc_and_rest_speak_tls13_only(tmp_path: Path, pki: Path) -> None:
    settings = GatewaySettings(
        models_dir=models_dir(tmp_path),
        server={"port": 0},
        metrics={"port": None},
        rest={"port": 0},
        tls={"dir": pki},
    )
    async with Gateway(settings) as gw:
        for port in (gw.port, gw.rest_port):
            assert port is not None
            await asyncio.to_thread(assert_refused_12_accepted_13, port, pki)
            assert not await asyncio.to_thread(tls12_accepted, "127.0.0.1", port)


async def test_ca_service_speaks_tls13_only(tmp_path: Path) -> None:
    ca_dir = tmp_path / "ca"
    write_dev_pki(tmp_path / "pki", [], ca_dir=ca_dir)
    server = CaServer(EnrollmentServicer(ca_dir, None))
    await server.start()
    try:
        # server authentication only: devices have no certificate yet when they enroll
        await asyncio.to_thread(assert_refused_12_accepted_13, server.port, ca_dir, None)
    finally:
        await server.stop(0)


@pytest.fixture
def tls12_server(pki: Path) -> Iterator[int]:
    """A plain Python TLS server that still accepts TLS 1.2 (what the probe must catch)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join(5)
    sock.close()


def test_startup_probe_refuses_a_listener_that_accepts_tls12(tls12_server: int) -> None:
    assert tls12_accepted("127.0.0.1", tls12_server)
    with pytest.raises(InvalidArgument, match=f"accepts TLS 1.2.*{GRPC_CIPHER_ENV}"):
        assert_tls13_only("127.0.0.1", tls12_server, "gRPC")
    with pytest.raises(InvalidArgument, match=r"accepts TLS 1\.2"):  # a wildcard bind address
        assert_tls13_only("0.0.0.0", tls12_server, "REST")


def test_startup_probe_that_reaches_nothing_warns(caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.ports import free_port

    assert_tls13_only("127.0.0.1", free_port(), "gRPC")
    assert "could not reach gRPC" in caplog.text


async def test_the_probe_of_a_listener_on_the_gateways_own_loop_is_conclusive(
    pki: Path, tmp_path: Path
) -> None:
    # The REST listener (uvicorn) is served by the gateway's event loop. Probed from that loop,
    # it could not answer: the probe timed out after 5 s and passed unchecked. Here a listener
    # on this loop still accepts TLS 1.2 and the gateway's check must see it.
    from cloud._transport import TransportSecurity

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pki / "server.pem"), str(pki / "server.key"))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    port = server.sockets[0].getsockname()[1]
    transport = TransportSecurity(
        GatewaySettings(models_dir=tmp_path, tls={"dir": pki}), uses_stores=False
    )
    try:
        with pytest.raises(InvalidArgument, match=r"REST on 127\.0\.0\.1:\d+ accepts TLS 1\.2"):
            await asyncio.wait_for(transport.check_listener("127.0.0.1", port, "REST"), 4)
    finally:
        server.close()
        await server.wait_closed()


def test_a_listener_that_does_not_answer_is_not_taken_as_refusing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        port = silent.getsockname()[1]
        with pytest.raises(TimeoutError, match=r"did not answer a TLS 1\.2 ClientHello"):
            tls12_accepted("127.0.0.1", port, timeout_s=0.3)
        assert_tls13_only("127.0.0.1", port, "REST", timeout_s=0.3)
    assert "could not check that REST refuses TLS 1.2" in caplog.text
