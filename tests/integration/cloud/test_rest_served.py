"""The gateway serves its REST front door itself (``rest.port`` / ``serve --rest-port``), behind
the same transport security as gRPC: mTLS with the gateway's CA, TLS 1.3 only."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
import pytest

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import write_dev_pki
from tests.support.tiny_cnn import NAME, build_bundle


def _settings(tmp_path: Path, **tls: object) -> GatewaySettings:
    build_bundle(tmp_path / "models" / NAME)
    return GatewaySettings(
        models_dir=tmp_path / "models",
        server={"port": 0, "port_file": tmp_path / "ports.json"},
        metrics={"port": None},
        rest={"port": 0},
        tls=tls or {"dir": tmp_path / "certs"},
    )


def _client_context(certs: Path, device: str | None, tls12_only: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    if device is not None:
        ctx.load_cert_chain(str(certs / f"{device}.pem"), str(certs / f"{device}.key"))
    if tls12_only:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def test_rest_is_served_over_mtls_with_tls13_only(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    write_dev_pki(certs, ["devA"])
    async with Gateway(_settings(tmp_path)) as gw:
        assert gw.rest_port
        assert json.loads((tmp_path / "ports.json").read_text())["rest_port"] == gw.rest_port
        url = f"https://127.0.0.1:{gw.rest_port}/v1/models"

        async with httpx.AsyncClient(verify=_client_context(certs, "devA")) as client:
            r = await client.get(url)
        assert r.status_code == 200 and NAME in r.text

        for refused in (_client_context(certs, None), _client_context(certs, "devA", True)):
            # no client certificate, or a client that stops at TLS 1.2: the handshake fails
            async with httpx.AsyncClient(verify=refused) as client:
                with pytest.raises(httpx.TransportError):
                    await client.get(url)
    # stopped with the gateway: nothing listens any more
    async with httpx.AsyncClient(verify=_client_context(certs, "devA")) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(url)


async def test_insecure_gateway_serves_plain_http_rest(tmp_path: Path) -> None:
    async with Gateway(_settings(tmp_path, insecure=True)) as gw:
        async with httpx.AsyncClient() as client:
            r = await client.get(f"http://127.0.0.1:{gw.rest_port}/v1/models")
    assert r.status_code == 200 and NAME in r.text
