"""A real gateway admits only device certificates that are not revoked: a certificate the CA
signed but without clientAuth, without the device URI SAN or with a common name that disagrees
is refused with UNAUTHENTICATED on every RPC; a revoked certificate or device is refused at
Hello, and a device revoked while its session is open is cut off; the rest keep being served."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from aiml021.registry.v1 import registry_pb2, registry_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud import Gateway
from cloud._settings import GatewaySettings
from cloud.core import AuditEvent
from common.auth import (
    DEVICE_URI_PREFIX,
    CertificateAuthority,
    KeyPair,
    load_keypair,
    load_private_key,
    open_deny_list,
    serial_hex,
    write_dev_pki,
)
from tests.integration.cloud._gateway import SessionClient, hello, models_dir

X = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)


def _odd_cert(ca: KeyPair, cn: str, *, eku: bool, uri: str | None) -> KeyPair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), True
        )
    )
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    if uri is not None:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False
        )
    return KeyPair(b.sign(ca.key, hashes.SHA256()), key)


def _creds(pki: Path, kp: KeyPair | None = None, device: str = "") -> grpc.ChannelCredentials:
    ca = (pki / "ca.pem").read_bytes()
    if kp is not None:
        return grpc.ssl_channel_credentials(ca, kp.key_pem(), kp.cert_pem())
    return grpc.ssl_channel_credentials(
        ca, (pki / f"{device}.key").read_bytes(), (pki / f"{device}.pem").read_bytes()
    )


async def _welcomed(
    port: int, creds: grpc.ChannelCredentials
) -> tuple[grpc.aio.Channel, SessionClient]:
    channel = grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)
    client = SessionClient(channel)
    await client.send(hello())
    await client.recv(("welcome",))
    return channel, client


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    d = tmp_path / "pki"
    write_dev_pki(d, ["dev-1", "dev-2", "dev-3"])
    return d


async def test_only_unrevoked_device_certificates_are_served(tmp_path: Path, pki: Path) -> None:
    deny_url = f"sqlite:///{tmp_path / 'shared' / 'deny.sqlite3'}"
    settings = GatewaySettings(
        models_dir=models_dir(tmp_path),
        server={"port": 0},
        metrics={"port": None},
        tls={"dir": pki, "revocation_url": deny_url, "revocation_refresh_s": 0.1},
    )
    ca = CertificateAuthority.open(tmp_path / "pki-ca").keypair
    odd = {
        "no clientAuth EKU": (
            _odd_cert(ca, "dev-9", eku=False, uri=DEVICE_URI_PREFIX + "dev-9"),
            "clientAuth",
        ),
        "no device URI SAN": (_odd_cert(ca, "dev-9", eku=True, uri=None), "device URI SAN"),
        "other URI SAN only": (
            _odd_cert(ca, "dev-9", eku=True, uri="spiffe://x/dev-9"),
            "device URI SAN",
        ),
        "CN disagrees": (
            _odd_cert(ca, "dev-1", eku=True, uri=DEVICE_URI_PREFIX + "dev-9"),
            "differs",
        ),
    }
    # a certificate that names no device must still be made for client authentication
    odd["no EKU, no device SAN"] = (
        _odd_cert(ca, "svc", eku=False, uri="spiffe://x/svc"),
        "clientAuth",
    )
    deny = open_deny_list(deny_url)
    audit: list[AuditEvent] = []
    async with Gateway(settings, audit=audit.append) as gw:
        good_channel, good = await _welcomed(gw.port, _creds(pki, device="dev-1"))

        for name, (kp, why) in odd.items():
            async with grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", _creds(pki, kp)) as ch:
                code, details = await _session_status(ch)
                assert code == grpc.StatusCode.UNAUTHENTICATED, name
                assert why in details, name
                # not only the session: every RPC
                stub = registry_pb2_grpc.ModelRegistryServiceStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.ListModels(registry_pb2.ListModelsRequest())
                assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, name

        # the gateway's own server certificate (serverAuth only) is refused in the handshake
        server_kp = KeyPair(
            x509.load_pem_x509_certificate((pki / "server.pem").read_bytes()),
            load_private_key(pki / "server.key"),
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{gw.port}", _creds(pki, server_kp)) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await _welcomed_on(ch)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        # revoking one certificate (by serial) refuses it at Hello
        dev2 = x509.load_pem_x509_certificate((pki / "dev-2.pem").read_bytes())
        await deny.revoke("serial", serial_hex(dev2), "key lost")
        # revoking a device while its session is open cuts the session off
        dev3_channel, dev3 = await _welcomed(gw.port, _creds(pki, device="dev-3"))
        assert (await dev3.infer("r3", X)).WhichOneof("frame") == "infer_result"
        await deny.revoke("device", "dev-3", "stolen")
        # the deny-list is re-read every 0.1 s; the device only reads from here on: a write in
        # flight when the status arrives makes grpc's asyncio client report INTERNAL instead
        # (grpc/grpc#36066), which is the client library's fault, not the gateway's
        code = await asyncio.wait_for(dev3.call.code(), 10)
        assert code == grpc.StatusCode.UNAUTHENTICATED, await dev3.call.details()
        assert "device 'dev-3' is revoked" in (await dev3.call.details() or "")
        await dev3_channel.close()
        for device, why in (
            ("dev-2", f"certificate {serial_hex(dev2)}"),
            ("dev-3", "device 'dev-3'"),
        ):
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{gw.port}", _creds(pki, device=device)
            ) as ch:
                code, details = await _session_status(ch)
                assert code == grpc.StatusCode.UNAUTHENTICATED, device
                assert why in details, device

        # a refused stream that never sends its Hello still learns why, once the gateway
        # stopped waiting for its first message
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{gw.port}", _creds(pki, device="dev-2")
        ) as ch:
            silent = SessionClient(ch).call
            assert await asyncio.wait_for(silent.code(), 10) == grpc.StatusCode.UNAUTHENTICATED
            assert f"certificate {serial_hex(dev2)}" in (await silent.details() or "")

        # the good device was served throughout
        assert (await good.infer("r1", X)).WhichOneof("frame") == "infer_result"
        assert gw.transport.authenticator.cut == 1
        # refusals and the cut session are on the record
        details = [e.detail for e in audit if e.outcome == "UNAUTHENTICATED"]
        assert any("clientAuth" in d for d in details)
        assert any("open call ended: device 'dev-3' is revoked" in d for d in details)
        assert any("certificate " + serial_hex(dev2) in d for d in details)
        await good_channel.close()
    await deny.close()


async def _welcomed_on(channel: grpc.aio.Channel) -> None:
    client = SessionClient(channel)
    await client.send(hello())
    await client.recv(("welcome",))


async def _session_status(channel: grpc.aio.Channel) -> tuple[grpc.StatusCode, str]:
    """How a session stream that the gateway refuses ends. The gateway refuses a streaming
    call only once its first message (the Hello) arrived, so grpc's asyncio client, which
    reports INTERNAL when a status overtakes one of its writes (grpc/grpc#36066), sees the
    gateway's status."""
    client = SessionClient(channel)
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        await client.send(hello())
        await client.recv(("welcome",))
    return await client.call.code(), await client.call.details() or ""


async def test_a_session_does_not_outlive_its_certificate(tmp_path: Path, pki: Path) -> None:
    """TLS checks validity once, at the handshake; the gateway ends the streams (and refuses
    new calls on old connections) of certificates that expired since."""
    authority = CertificateAuthority.open(tmp_path / "pki-ca")
    short = authority.issue_device("dev-short", days=3 / 86400)  # three seconds
    settings = GatewaySettings(
        models_dir=models_dir(tmp_path),
        server={"port": 0},
        metrics={"port": None},
        tls={"dir": pki, "revocation_url": "none", "revocation_refresh_s": 0.2},
    )
    async with Gateway(settings) as gw:
        good_channel, good = await _welcomed(gw.port, _creds(pki, device="dev-1"))
        channel, client = await _welcomed(gw.port, _creds(pki, short))
        deadline = asyncio.get_running_loop().time() + 15
        while not client.call.done():
            assert asyncio.get_running_loop().time() < deadline, (
                "the stream outlived its certificate"
            )
            await asyncio.sleep(0.1)
        assert await client.call.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "of device 'dev-short' expired" in (await client.call.details() or "")
        # a new call on the same (old) connection is refused too
        stub = registry_pb2_grpc.ModelRegistryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListModels(registry_pb2.ListModelsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await good.infer("r1", X)).WhichOneof("frame") == "infer_result"
        await channel.close()
        await good_channel.close()


def _https(pki: Path, kp: KeyPair, tmp: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    ctx.check_hostname = False
    kp.write(tmp, "client")
    ctx.load_cert_chain(str(tmp / "client.pem"), str(tmp / "client.key"))
    return ctx


async def test_rest_applies_the_same_certificate_checks(tmp_path: Path, pki: Path) -> None:
    deny_url = f"sqlite:///{tmp_path / 'deny.sqlite3'}"
    settings = GatewaySettings(
        models_dir=models_dir(tmp_path),
        server={"port": 0},
        metrics={"port": None},
        rest={"port": 0},
        tls={"dir": pki, "revocation_url": deny_url, "revocation_refresh_s": 0.1},
    )
    ca = CertificateAuthority.open(tmp_path / "pki-ca").keypair
    good = load_keypair(pki / "dev-1.pem", pki / "dev-1.key")
    no_eku = _odd_cert(ca, "dev-9", eku=False, uri=DEVICE_URI_PREFIX + "dev-9")
    deny = open_deny_list(deny_url)
    async with Gateway(settings) as gw:
        url = f"https://127.0.0.1:{gw.rest_port}/v2/health/ready"
        async with httpx.AsyncClient(verify=_https(pki, good, tmp_path / "good")) as client:
            assert (await client.get(url)).status_code == 200
            async with httpx.AsyncClient(verify=_https(pki, no_eku, tmp_path / "odd")) as odd:
                r = await odd.get(url)
            assert r.status_code == 401 and "clientAuth" in r.json()["error"]
            await deny.revoke("device", "dev-1", "stolen")
            await asyncio.sleep(0.5)
            r = await client.get(url)
            assert r.status_code == 401 and "device 'dev-1' is revoked" in r.json()["error"]
    await deny.close()
