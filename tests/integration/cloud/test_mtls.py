"""mTLS: the device id comes from the verified certificate; clients without a certificate, or with
one from another CA, are refused while good clients keep being served; TLS 1.3 is negotiated."""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

import grpc
import numpy as np
import pytest

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import create_ca, issue_device_cert, write_dev_pki
from tests.integration.cloud._gateway import SessionClient, hello, models_dir


def _creds(pki: Path, device: str | None) -> grpc.ChannelCredentials:
    ca = (pki / "ca.pem").read_bytes()
    if device is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=(pki / f"{device}.key").read_bytes(),
        certificate_chain=(pki / f"{device}.pem").read_bytes(),
    )


async def _open(port: int, creds: grpc.ChannelCredentials, device: str = "") -> SessionClient:
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)
    client = SessionClient(channel)
    client.channel = channel  # type: ignore[attr-defined]
    await client.send(hello(device))
    return client


def _tls_version(port: int, pki: Path, device: str, max_version: ssl.TLSVersion | None) -> str:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.load_cert_chain(str(pki / f"{device}.pem"), str(pki / f"{device}.key"))
    ctx.set_alpn_protocols(["h2"])
    if max_version is not None:
        ctx.maximum_version = max_version
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return str(tls.version())


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    write_dev_pki(d, ["dev-1", "dev-2"])
    rogue = create_ca("rogue CA")
    issue_device_cert(rogue, "dev-1").write(d, "rogue")
    return d


async def test_mtls_device_identity_and_refusals(tmp_path: Path, pki: Path) -> None:
    settings = GatewaySettings(
        models_dir=models_dir(tmp_path),
        server={"port": 0},
        metrics={"port": None},
        tls={"dir": pki},
    )
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    async with Gateway(settings) as gw:
        good = await _open(gw.port, _creds(pki, "dev-1"))
        welcome = await good.recv(("welcome",))
        assert welcome.welcome.device_id == "dev-1"  # from the certificate, Hello was empty

        for name, creds in (
            ("no certificate", _creds(pki, None)),
            ("other CA", _creds(pki, "rogue")),
        ):
            channel = grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", creds)
            bad = SessionClient(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:  # refused in the TLS handshake
                await bad.send(hello())
                await bad.recv(("welcome",))
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE, name
            await channel.close()

        liar = await _open(gw.port, _creds(pki, "dev-2"), device="dev-1")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await liar.recv(("welcome",))
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await liar.channel.close()  # type: ignore[attr-defined]

        assert (await good.infer("r", x)).WhichOneof("frame") == "infer_result"
        version = await asyncio.to_thread(_tls_version, gw.port, pki, "dev-1", None)
        assert version == "TLSv1.3"
        await good.channel.close()  # type: ignore[attr-defined]


def test_missing_tls_files_name_the_fix(tmp_path: Path) -> None:
    from cloud.grpc import server_credentials
    from common.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="aiml021 certs"):
        server_credentials(tmp_path / "nowhere")
