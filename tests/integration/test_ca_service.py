"""The CA service (EnrollmentService) against a hostile caller: nothing is signed, and no
bootstrap token is spent, for a request that cannot become a device certificate; every refusal
has a precise status; the CA's own certificate, an expired one or garbage cannot be renewed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from aiml021.enrollment.v1 import enrollment_pb2, enrollment_pb2_grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cloud.authz import cert_identity
from common.auth import (
    CaServer,
    CertificateAuthority,
    DeviceScope,
    EnrollmentServicer,
    open_deny_list,
)
from common.auth._ca_service import IssueEvent
from common.auth._enroll import make_csr, renewal_proof


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


class Ca:
    def __init__(self, directory: Path, stub: enrollment_pb2_grpc.EnrollmentServiceStub) -> None:
        self.directory = directory
        self.stub = stub
        self.events: list[IssueEvent] = []

    @property
    def authority(self) -> CertificateAuthority:
        return CertificateAuthority.open(self.directory)

    async def enroll(self, device: str, token: str, csr: bytes) -> enrollment_pb2.EnrollResponse:
        req = enrollment_pb2.EnrollRequest(device_id=device, bootstrap_token=token, csr_pem=csr)
        return await self.stub.Enroll(req, timeout=10)

    async def renew(self, cert: bytes, csr: bytes, proof: bytes) -> enrollment_pb2.RenewResponse:
        req = enrollment_pb2.RenewRequest(certificate_pem=cert, csr_pem=csr, proof=proof)
        return await self.stub.Renew(req, timeout=10)


@pytest.fixture
async def ca(tmp_path: Path) -> AsyncIterator[Ca]:
    d = tmp_path / "ca"
    CertificateAuthority.init(d)
    deny = open_deny_list(f"sqlite:///{tmp_path / 'deny.sqlite3'}")
    servicer = EnrollmentServicer(d, deny, device_lifetime_s=600)
    server = CaServer(servicer)
    await server.start()
    creds = grpc.ssl_channel_credentials((d / "bundle.pem").read_bytes())
    async with grpc.aio.secure_channel(f"127.0.0.1:{server.port}", creds) as channel:
        c = Ca(d, enrollment_pb2_grpc.EnrollmentServiceStub(channel))
        servicer.on_issue = c.events.append
        yield c
    await server.stop(0)
    await deny.close()


async def _cli(argv: list[str]) -> int:
    """``aiml021 ARGV`` in-process, on a worker thread: its asyncio.run must not touch this
    thread's event loop."""
    from common.cli import main

    return await asyncio.to_thread(main, argv)


async def _refused(call: object, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    assert info.value.code() == code, info.value.details()
    assert text in (info.value.details() or ""), info.value.details()


async def test_a_bad_request_does_not_spend_the_token(ca: Ca) -> None:
    token = ca.authority.issue_bootstrap("cam-1", 600)
    bad = [
        (b"not a csr", grpc.StatusCode.INVALID_ARGUMENT, "not a PEM PKCS#10 request"),
        (make_csr(_key(), "cam-2"), grpc.StatusCode.INVALID_ARGUMENT, "names 'cam-2'"),
        (b"x" * 20_000, grpc.StatusCode.INVALID_ARGUMENT, "limit 16384"),
    ]
    for csr, code, text in bad:
        await _refused(ca.enroll("cam-1", token, csr), code, text)
    await _refused(
        ca.enroll("cam-1", token, b"x" * 200_000), grpc.StatusCode.RESOURCE_EXHAUSTED, ""
    )
    await _refused(
        ca.enroll("cam-1", "", make_csr(_key(), "cam-1")),
        grpc.StatusCode.UNAUTHENTICATED,
        "needs a bootstrap token",
    )
    await _refused(
        ca.enroll("cam-1", "aiml021-bt.guess", make_csr(_key(), "cam-1")),
        grpc.StatusCode.UNAUTHENTICATED,
        "unknown",
    )
    await _refused(
        ca.enroll("cam-9", token, make_csr(_key(), "cam-9")),
        grpc.StatusCode.UNAUTHENTICATED,
        "another device",
    )
    # the token still works once, and only once
    ok = await ca.enroll("cam-1", token, make_csr(_key(), "cam-1"))
    assert ok.certificate.certificate_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    await _refused(
        ca.enroll("cam-1", token, make_csr(_key(), "cam-1")),
        grpc.StatusCode.UNAUTHENTICATED,
        "already used",
    )
    outcomes = [e.outcome for e in ca.events]
    assert outcomes.count("issued") == 1 and "UNAUTHENTICATED" in outcomes
    assert "INVALID_ARGUMENT" in outcomes


async def test_revoked_devices_cannot_enroll_or_renew(ca: Ca, tmp_path: Path) -> None:
    key = _key()
    current = ca.authority.sign_device(make_csr(key, "cam-1"), "cam-1", 600)
    deny = open_deny_list(f"sqlite:///{tmp_path / 'deny.sqlite3'}")
    await deny.revoke("serial", format(current.cert.serial_number, "x"))
    csr = make_csr(_key(), "cam-1")
    await _refused(
        ca.renew(current.cert_pem, csr, renewal_proof(key, csr)),
        grpc.StatusCode.PERMISSION_DENIED,
        "is revoked",
    )
    await deny.revoke("device", "cam-2")
    token = ca.authority.issue_bootstrap("cam-2", 600)
    await _refused(
        ca.enroll("cam-2", token, make_csr(_key(), "cam-2")),
        grpc.StatusCode.PERMISSION_DENIED,
        "device 'cam-2' is revoked",
    )
    await deny.close()


async def test_what_cannot_be_renewed(ca: Ca) -> None:
    authority = ca.authority
    csr_key = _key()
    csr = make_csr(csr_key, "cam-1")
    # garbage, and the CA's own certificate (self-signed by a trusted CA, but a CA)
    await _refused(
        ca.renew(b"garbage", csr, b""), grpc.StatusCode.INVALID_ARGUMENT, "not PEM X.509"
    )
    await _refused(
        ca.renew(authority.keypair.cert_pem(), csr, renewal_proof(authority.keypair.key, csr)),
        grpc.StatusCode.UNAUTHENTICATED,
        "CA certificate",
    )
    # an expired certificate
    key = _key()
    short = authority.sign_device(make_csr(key, "cam-1"), "cam-1", lifetime_s=1)
    await asyncio.sleep(1.5)
    await _refused(
        ca.renew(short.cert_pem, csr, renewal_proof(key, csr)),
        grpc.StatusCode.UNAUTHENTICATED,
        "not valid now",
    )
    # the same key again
    live_key = _key()
    live = authority.sign_device(make_csr(live_key, "cam-1"), "cam-1", 600)
    same = make_csr(live_key, "cam-1")
    await _refused(
        ca.renew(live.cert_pem, same, renewal_proof(live_key, same)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "new key",
    )


async def test_operator_and_device_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.ca import ca_service

    d = tmp_path / "ca"
    assert await _cli(["ca", "--dir", str(d), "init", "--host", "127.0.0.1"]) == 0
    assert await _cli(["ca", "--dir", str(d), "init"]) == 1  # never overwrites a CA
    assert (
        await _cli(["ca", "--dir", str(d), "issue-bootstrap", "--device", "cam-1", "--ttl", "5m"])
        == 0
    )
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert token.startswith("aiml021-bt.")
    # offline signing of a request made elsewhere
    csr = tmp_path / "cam-7.csr"
    csr.write_bytes(make_csr(_key(), "cam-7"))
    out = tmp_path / "cam-7.pem"
    assert (
        await _cli(
            ["ca", "--dir", str(d), "sign", "--csr", str(csr), "--device", "cam-7", "-o", str(out)]
        )
        == 0
    )
    assert b"BEGIN CERTIFICATE" in out.read_bytes()
    assert await _cli(["ca", "--dir", str(d), "bundle"]) == 0
    assert capsys.readouterr().out.count("BEGIN CERTIFICATE") == 1
    # the device side: aiml021 enroll against the running service
    dev = tmp_path / "device"
    dev.mkdir()
    (dev / "ca.pem").write_bytes((d / "bundle.pem").read_bytes())
    enroll = [sys.executable, "-m", "common.cli", "enroll", "--device", "cam-1", "--token", token]
    with ca_service(d) as port:
        cmd = [*enroll, "--ca", f"127.0.0.1:{port}", "--tls-dir", str(dev)]
        first = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60, check=False
        )
        assert first.returncode == 0, first.stderr
        assert (dev / "cam-1.key").stat().st_mode & 0o777 == 0o600
        # a second enrollment with the same token is refused, with the reason
        again = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=60, check=False
        )
    assert again.returncode == 1 and "already used" in again.stderr, again.stderr


async def test_ca_actions_and_enrollments_land_in_the_audit_trail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from tests.support.ca import ca_service

    d, db = tmp_path / "ca", f"sqlite:///{tmp_path / 'metadata.sqlite3'}"
    ca = ["ca", "--dir", str(d), "--audit-url", db]
    assert await _cli([*ca, "init"]) == 0
    assert await _cli([*ca, "issue-bootstrap", "--device", "cam-1"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    dev = tmp_path / "device"
    dev.mkdir()
    (dev / "ca.pem").write_bytes((d / "bundle.pem").read_bytes())
    cmd = [sys.executable, "-m", "common.cli", "enroll", "--device", "cam-1", "--token", token]
    with ca_service(d, audit_url=db) as port:
        for _ in range(2):  # the second is refused: token already used
            await asyncio.to_thread(
                subprocess.run,
                [*cmd, "--ca", f"127.0.0.1:{port}", "--tls-dir", str(dev)],
                timeout=60,
                check=False,
            )
    assert (
        await _cli(
            [
                *ca,
                "revoke",
                "--store",
                f"sqlite:///{tmp_path / 'deny.sqlite3'}",
                "--device",
                "cam-1",
            ]
        )
        == 0
    )
    assert await _cli([*ca, "rotate"]) == 0
    capsys.readouterr()
    assert await _cli(["audit", "query", "--db", db, "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    seen = [(r["action"], r["resource"], r["outcome"]) for r in rows]
    assert ("ca.issue-bootstrap", "cam-1", "OK") in seen
    assert ("ca.enroll", "cam-1", "issued") in seen
    assert ("ca.enroll", "cam-1", "UNAUTHENTICATED") in seen
    assert ("ca.revoke", "device:cam-1", "OK") in seen
    assert any(a == "ca.rotate" for a, _, _ in seen)
    assert await _cli(["audit", "verify", "--db", db]) == 0  # one unbroken chain


async def test_the_tenant_set_at_bootstrap_survives_enrollment_and_renewal(ca: Ca) -> None:
    # The operator decides the tenant when issuing the token; the device cannot choose it, a
    # renewal keeps it, and the gateway's authorization reads it from the certificate.
    token = ca.authority.issue_bootstrap("cam-5", 600, DeviceScope("acme", "lines", "eu-west"))
    key = _key()
    enrolled = await ca.enroll("cam-5", token, make_csr(key, "cam-5"))
    first = x509.load_pem_x509_certificate(enrolled.certificate.certificate_pem)
    ident = cert_identity(first.public_bytes(serialization.Encoding.DER))
    assert (ident.device_id, ident.org, ident.project, ident.region) == (
        "cam-5",
        "acme",
        "lines",
        "eu-west",
    )
    new_key = _key()
    csr = make_csr(new_key, "cam-5")
    renewed = await ca.renew(enrolled.certificate.certificate_pem, csr, renewal_proof(key, csr))
    second = x509.load_pem_x509_certificate(renewed.certificate.certificate_pem)
    assert second.serial_number != first.serial_number
    assert DeviceScope.of(second) == DeviceScope("acme", "lines", "eu-west")
    # a request naming another tenant in its own extensions gets none of it
    other = _key()
    token2 = ca.authority.issue_bootstrap("cam-6", 600)
    enrolled2 = await ca.enroll("cam-6", token2, make_csr(other, "cam-6"))
    plain = x509.load_pem_x509_certificate(enrolled2.certificate.certificate_pem)
    assert DeviceScope.of(plain) == DeviceScope()
    assert cert_identity(plain.public_bytes(serialization.Encoding.DER)).org == ""
