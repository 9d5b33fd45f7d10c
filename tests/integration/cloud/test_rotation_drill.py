"""Rotation drill: the gateway's server certificate, then the CA itself, are rotated while
devices stream, without restarting anything, and no request fails.

Three devices keep their sessions open and offload continuously; a fourth connects afresh
(new TLS handshake, Hello, one request, close) every few hundred milliseconds, so handshakes
happen all through the drill and each sees the material of that moment. Steps (the operator's
commands, ``aiml021 ca ...``): a new server certificate; a new CA (bundle old+new to the gateway,
devices renew from the new CA, a server certificate of the new CA); the old CA retired. A probe
that opens fresh TLS connections shows which certificate each listener (gRPC and REST)
presents; a device certificate of the retired CA is refused at the end."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import ssl
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from cloud import Gateway
from cloud._settings import GatewaySettings
from common.auth import CertificateAuthority, write_atomic, write_dev_pki
from common.data import load_fashion_mnist
from common.settings import nest
from edge_agent import EdgeAgent, EdgeSettings, Route
from tests.integration.cloud._gateway import SessionClient, hello
from tests.support.ca import ca_command, ca_service

ROOT = Path(__file__).resolve().parents[3]
BUNDLE = ROOT / "models" / "fmnist_branchy"
DEVICES = ("drill-a", "drill-b", "drill-c")


def presented(port: int) -> x509.Certificate:
    """The certificate a fresh TLS connection to ``port`` is shown."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), 5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


class Fleet:
    """Devices that keep offloading and count what failed."""

    def __init__(self, agents: list[EdgeAgent]) -> None:
        self.agents = agents
        self.ok = 0
        self.connections = 0
        self.churner: EdgeAgent | None = None
        self.failed: list[str] = []
        self._stop = asyncio.Event()
        self._images = load_fashion_mnist("test")[0][:64]

    async def _stream(self, agent: EdgeAgent) -> None:
        agent.set_thresholds({"exit1": 1.0, "exit2": 1.0})  # every request offloads
        i = 0
        while not self._stop.is_set():
            try:
                r = await agent.infer(self._images[i % len(self._images)])
            except Exception as exc:  # a failed request is what the drill counts
                self.failed.append(f"{agent.settings.device_id}: {exc!r}")
            else:
                if r.route is Route.CLOUD:
                    self.ok += 1
                else:
                    self.failed.append(f"{agent.settings.device_id}: answered {r.route.value}")
            i += 1
            await asyncio.sleep(0.02)

    async def churn(self, settings: EdgeSettings) -> None:
        """Connect afresh, offload one request, disconnect; again and again."""
        i = 0
        while not self._stop.is_set():
            agent = EdgeAgent(settings)
            self.churner = agent
            await agent.start()
            try:
                if not await agent.wait_connected(5):
                    self.failed.append("churn: not welcomed within 5 s")
                    continue
                agent.set_thresholds({"exit1": 1.0, "exit2": 1.0})
                r = await agent.infer(self._images[i % len(self._images)])
                if r.route is Route.CLOUD:
                    self.ok += 1
                    self.connections += 1
                else:
                    self.failed.append(f"churn: answered {r.route.value}")
            finally:
                await agent.close()
            i += 1
            await asyncio.sleep(0.2)

    async def run_until_stopped(self) -> None:
        await asyncio.gather(*(self._stream(a) for a in self.agents))

    def stop(self) -> None:
        self._stop.set()


async def _until_presented(port: int, check: object, timeout_s: float = 10) -> None:
    """Wait until a fresh connection to ``port`` is shown a certificate that passes ``check``
    (probed from a thread: the REST listener shares this event loop)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check(await asyncio.to_thread(presented, port)):  # type: ignore[operator]
        assert loop.time() < deadline, f"port {port} still presents the old certificate"
        await asyncio.sleep(0.1)


async def test_server_certificate_and_ca_rotate_while_devices_stream(tmp_path: Path) -> None:
    gw_tls, ca_dir = tmp_path / "gateway-tls", tmp_path / "ca"
    write_dev_pki(gw_tls, ["straggler"], hosts=["localhost", "127.0.0.1"], ca_dir=ca_dir)
    old_ca = CertificateAuthority.open(ca_dir).keypair.cert
    settings = GatewaySettings(
        **nest(
            {
                "models_dir": ROOT / "models",
                "server.port": 0,
                "metrics.port": None,
                "rest.port": 0,
                "tls.dir": gw_tls,
                "tls.reload_interval_s": 0.1,
                "drain_grace_s": 1.0,
            }
        )
    )
    with ca_service(ca_dir, device_lifetime="1h") as ca_port:
        async with Gateway(settings) as gw:
            agents = []
            for device in DEVICES:
                d = tmp_path / device
                d.mkdir()
                shutil.copy(ca_dir / "bundle.pem", d / "ca.pem")
                token = CertificateAuthority.open(ca_dir).issue_bootstrap(device, 600)
                agents.append(
                    EdgeAgent(
                        EdgeSettings(
                            **nest(
                                {
                                    "bundle": BUNDLE,
                                    "gateway": f"127.0.0.1:{gw.port}",
                                    "device_id": device,
                                    "tls.dir": d,
                                    "tls.server_name": "localhost",
                                    "enrollment.ca_endpoint": f"127.0.0.1:{ca_port}",
                                    "enrollment.bootstrap_token": token,
                                    "session.backoff_initial_s": 0.02,
                                    "session.backoff_max_s": 0.2,
                                    "routing.sla_ms": 5000,
                                    "routing.codec": "raw",
                                    "cache.entries": 0,
                                }
                            )
                        )
                    )
                )
            for agent in agents:
                await agent.start()
                assert await agent.wait_connected(10)
            churn_settings = agents[-1].settings
            agents = agents[:-1]
            fleet = Fleet(agents)
            streaming = asyncio.create_task(fleet.run_until_stopped())
            churning = asyncio.create_task(fleet.churn(churn_settings))
            ports = (gw.port, gw.rest_port)
            try:
                await asyncio.sleep(1.0)
                first = await asyncio.to_thread(presented, gw.port)

                # 1. a new server certificate (same CA)
                await asyncio.to_thread(
                    ca_command, ca_dir, "server-cert", "--tls-dir", str(gw_tls),
                    "--host", "localhost", "--host", "127.0.0.1",
                )  # fmt: skip
                new_server = x509.load_pem_x509_certificate((gw_tls / "server.pem").read_bytes())
                for port in ports:
                    await _until_presented(
                        port, lambda c: c.serial_number == new_server.serial_number
                    )
                assert new_server.serial_number != first.serial_number
                await asyncio.sleep(2.0)  # devices reconnect under the new certificate

                # 2. a new CA: trusted beside the old one, devices renew from it, then the
                #    server presents a certificate of the new CA
                await asyncio.to_thread(ca_command, ca_dir, "rotate")
                new_ca = CertificateAuthority.open(ca_dir).keypair.cert
                write_atomic(gw_tls / "ca.pem", (ca_dir / "bundle.pem").read_bytes(), 0o644)
                await asyncio.sleep(0.5)
                for agent in [*agents, fleet.churner]:
                    assert agent is not None and agent.certificate is not None
                    renewed = await agent.certificate.renew()
                    renewed.verify_directly_issued_by(new_ca)
                await asyncio.to_thread(
                    ca_command, ca_dir, "server-cert", "--tls-dir", str(gw_tls),
                    "--host", "localhost", "--host", "127.0.0.1",
                )  # fmt: skip
                for port in ports:
                    await _until_presented(port, lambda c: c.issuer == new_ca.subject)
                await asyncio.sleep(2.0)

                # 3. the old CA retired: the gateway trusts only the new one
                await asyncio.to_thread(ca_command, ca_dir, "retire")
                write_atomic(gw_tls / "ca.pem", (ca_dir / "bundle.pem").read_bytes(), 0o644)
                await asyncio.sleep(2.0)
            finally:
                fleet.stop()
                await asyncio.gather(streaming, churning)
                for agent in agents:
                    await agent.close()

            # a device still holding a certificate of the retired CA is refused in the handshake
            creds = grpc.ssl_channel_credentials(
                (ca_dir / "bundle.pem").read_bytes(),
                (gw_tls / "straggler.key").read_bytes(),
                (gw_tls / "straggler.pem").read_bytes(),
            )
            x509.load_pem_x509_certificate(
                (gw_tls / "straggler.pem").read_bytes()
            ).verify_directly_issued_by(old_ca)
            async with grpc.aio.secure_channel(
                f"127.0.0.1:{gw.port}",
                creds,
                options=[("grpc.ssl_target_name_override", "localhost")],
            ) as ch:
                client = SessionClient(ch)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await client.send(hello())
                    await client.recv(("welcome",))
                assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert gw.transport.material is not None and gw.transport.material.reloads >= 4

    logging.getLogger(__name__).info(
        "rotation drill: %d requests answered by the gateway, %d fresh connections, %d failed",
        fleet.ok, fleet.connections, len(fleet.failed),
    )  # fmt: skip
    assert fleet.failed == [], fleet.failed[:5]
    assert fleet.ok > 100
    assert fleet.connections >= 10  # fresh handshakes all through the drill
    # the streaming devices kept their one session throughout
    assert [a.metrics()["stream"]["sessions"] for a in agents] == [1] * len(agents)
