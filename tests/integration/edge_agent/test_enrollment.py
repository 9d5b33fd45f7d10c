"""Device lifecycle end to end, with the issuing CA in its own process (``aiml021 ca serve``), a
real gateway and the edge agent: enrollment with a one-time bootstrap token and a key made on
the device, automatic renewal before expiry, and revocation (the open session is cut, the next
Hello and the next renewal are refused)."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import (
    CertificateAuthority,
    DeviceFiles,
    enroll_device,
    load_private_key,
    renew_device,
    write_dev_pki,
)
from common.auth._enroll import EnrollmentClient, make_csr, renewal_proof
from common.data import load_fashion_mnist
from common.errors import PermissionDenied, Unauthenticated
from common.settings import nest
from edge_agent import EdgeAgent, EdgeSettings, Route
from tests.support.ca import ca_command, ca_service

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "models" / "fmnist_branchy"
DEVICE = "cam-enrolled"


def _images(n: int) -> np.ndarray:
    return load_fashion_mnist("test")[0][:n]


def _settings(dev_dir: Path, gw_port: int, ca_port: int, token_file: Path) -> EdgeSettings:
    return EdgeSettings(
        **nest(
            {
                "bundle": BUNDLE,
                "gateway": f"127.0.0.1:{gw_port}",
                "device_id": DEVICE,
                "tls.dir": dev_dir,
                "tls.server_name": "localhost",
                "enrollment.ca_endpoint": f"127.0.0.1:{ca_port}",
                "enrollment.bootstrap_token_file": token_file,
                "enrollment.renew_at": 0.5,
                "enrollment.retry_s": 0.2,
                "enrollment.retry_max_s": 0.5,
                "session.backoff_initial_s": 0.05,
                "session.backoff_max_s": 0.3,
                "routing.sla_ms": 3000,
                "routing.codec": "raw",
                "cache.entries": 0,
            }
        )
    )


async def _until(predicate: object, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


async def _offloads(agent: EdgeAgent, images: np.ndarray) -> set[Route]:
    agent.set_thresholds({"exit1": 1.0, "exit2": 1.0})  # every request goes to the gateway
    return {r.route for r in await asyncio.gather(*(agent.infer(im) for im in images))}


async def test_enroll_renew_revoke(tmp_path: Path) -> None:
    gw_tls, ca_dir = tmp_path / "gateway-tls", tmp_path / "ca"
    write_dev_pki(gw_tls, [], hosts=["localhost", "127.0.0.1"], ca_dir=ca_dir)
    assert not (gw_tls / "ca.key").exists()  # the gateway host never holds the CA key
    deny_url = f"sqlite:///{tmp_path / 'shared' / 'deny.sqlite3'}"
    dev_dir = tmp_path / "device"
    dev_dir.mkdir()
    shutil.copy(ca_dir / "bundle.pem", dev_dir / "ca.pem")  # delivered with the token
    token_file = tmp_path / "token"
    token_file.write_text(ca_command(ca_dir, "issue-bootstrap", "--device", DEVICE, "--ttl", "10m"))
    images = _images(16)
    gateway = GatewaySettings(
        models_dir=ROOT / "models",
        server={"port": 0},
        metrics={"port": None},
        tls={"dir": gw_tls, "revocation_url": deny_url, "revocation_refresh_s": 0.1},
        drain_grace_s=1.0,
    )
    with ca_service(ca_dir, revocation_url=deny_url, device_lifetime="20s") as ca_port:
        async with Gateway(gateway) as gw:
            settings = _settings(dev_dir, gw.port, ca_port, token_file)
            files = DeviceFiles(dev_dir, DEVICE)
            async with EdgeAgent(settings) as agent:
                # enrolled on start: the key was made here, 0600, and the certificate is its
                first = files.certificate()
                assert first is not None and agent.certificate is not None
                assert agent.certificate.stats.enrolled == 1
                assert (files.key_path.stat().st_mode & 0o777) == 0o600
                first_key = load_private_key(files.key_path)
                assert first.public_key() == first_key.public_key()
                life = first.not_valid_after_utc - dt.datetime.now(dt.UTC)
                assert dt.timedelta(seconds=15) < life <= dt.timedelta(seconds=20)
                assert await agent.wait_connected(10)
                assert await _offloads(agent, images) == {Route.CLOUD}

                # the token was consumed: nobody can enroll with it again
                thief = tmp_path / "thief"
                thief.mkdir()
                shutil.copy(dev_dir / "ca.pem", thief / "ca.pem")
                with pytest.raises(Unauthenticated, match="already used"):
                    await enroll_device(
                        DeviceFiles(thief, DEVICE),
                        f"127.0.0.1:{ca_port}",
                        token_file.read_text().strip(),
                    )

                # renewed automatically at half its lifetime: a new key and a new certificate
                assert await _until(lambda: agent.certificate.stats.renewed >= 1, 30)
                second = files.certificate()
                assert second is not None and second.serial_number != first.serial_number
                assert second.not_valid_after_utc > first.not_valid_after_utc
                assert load_private_key(files.key_path).public_key() != first_key.public_key()
                # the renewed certificate opens new sessions
                async with EdgeAgent(settings) as fresh:
                    assert await fresh.wait_connected(10)
                    assert await _offloads(fresh, images) == {Route.CLOUD}

                # revoked: the open session is cut and the next Hello refused
                ca_command(
                    ca_dir, "revoke", "--store", deny_url, "--device", DEVICE, "--reason", "stolen"
                )
                assert await _until(lambda: gw.transport.authenticator.cut >= 1, 10)
                refused = gw.transport.authenticator.refused
                assert await _until(lambda: gw.transport.authenticator.refused > refused, 10)
                assert not agent.client.connected  # type: ignore[union-attr]
                # answers come from the device now (never from a revoked session)
                assert Route.CLOUD not in await _offloads(agent, images[:4])
                # and the CA refuses to renew it
                with pytest.raises(PermissionDenied, match=f"device '{DEVICE}' is revoked"):
                    await renew_device(files, f"127.0.0.1:{ca_port}")


async def test_renewal_needs_the_current_key(tmp_path: Path) -> None:
    """A stolen certificate without its key cannot be renewed."""
    ca_dir = tmp_path / "ca"
    CertificateAuthority.init(ca_dir)
    victim_key = ec.generate_private_key(ec.SECP256R1())
    victim = CertificateAuthority.open(ca_dir).sign_device(
        make_csr(victim_key, "cam-1"), "cam-1", 600
    )
    with ca_service(ca_dir) as port:
        attacker_key = ec.generate_private_key(ec.SECP256R1())
        csr = make_csr(attacker_key, "cam-1")
        trust = (ca_dir / "bundle.pem").read_bytes()
        async with EnrollmentClient(f"127.0.0.1:{port}", trust) as client:
            with pytest.raises(Unauthenticated, match="renewal proof does not verify"):
                await client.renew(victim.cert_pem, csr, renewal_proof(attacker_key, csr))
            # a certificate from another CA is refused before anything is signed
            rogue = CertificateAuthority.init(tmp_path / "rogue")
            forged = rogue.sign_device(make_csr(attacker_key, "cam-1"), "cam-1", 600)
            with pytest.raises(Unauthenticated, match="not issued by a trusted CA"):
                await client.renew(forged.cert_pem, csr, renewal_proof(attacker_key, csr))
            # the victim's own renewal still works
            new_key = ec.generate_private_key(ec.SECP256R1())
            csr2 = make_csr(new_key, "cam-1")
            issued = await client.renew(victim.cert_pem, csr2, renewal_proof(victim_key, csr2))
            cert = x509.load_pem_x509_certificate(issued.certificate_pem)
            assert cert.public_key() == new_key.public_key()


async def test_a_lapsed_certificate_is_replaced_with_a_new_token(tmp_path: Path) -> None:
    """Offline past its certificate's lifetime (the CA unreachable), a device cannot renew; once
    the operator places a new bootstrap token, the agent enrolls again by itself."""
    from tests.support.ports import free_port

    ca_dir = tmp_path / "ca"
    write_dev_pki(tmp_path / "gateway-tls", [], ca_dir=ca_dir)
    dev_dir = tmp_path / "device"
    dev_dir.mkdir()
    shutil.copy(ca_dir / "bundle.pem", dev_dir / "ca.pem")
    token_file = tmp_path / "token"
    token_file.write_text(ca_command(ca_dir, "issue-bootstrap", "--device", DEVICE))
    port = free_port()
    settings = _settings(dev_dir, free_port(), port, token_file)  # no gateway needed
    files = DeviceFiles(dev_dir, DEVICE)
    with ca_service(ca_dir, device_lifetime="4s", port=port):
        agent = EdgeAgent(settings)
        await agent.start()
    try:
        first = files.certificate()
        assert first is not None and agent.certificate is not None
        # the CA is gone until the certificate lapses: renewals fail, the old token is spent
        assert await _until(
            lambda: files.certificate().not_valid_after_utc < dt.datetime.now(dt.UTC), 10
        )  # type: ignore[union-attr]
        assert agent.certificate.stats.failures >= 1
        token_file.write_text(ca_command(ca_dir, "issue-bootstrap", "--device", DEVICE))
        with ca_service(ca_dir, device_lifetime="1h", port=port):
            assert await _until(lambda: agent.certificate.stats.enrolled == 2, 15)  # type: ignore[union-attr]
        second = files.certificate()
        assert second is not None and second.serial_number != first.serial_number
        assert second.not_valid_after_utc > dt.datetime.now(dt.UTC)
    finally:
        await agent.close()
