"""Building the gateway's grpc.aio server: keepalive and message limits, mTLS by default, health
and reflection. Which services it serves is the composition root's choice (``cloud.app``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from aiml021.session.v1 import session_pb2
from grpc_health.v1 import health, health_pb2_grpc
from inference import grpc_service_pb2

from cloud._settings import ServerSettings, TlsSettings
from cloud.grpc._reflection import enable_reflection
from common.auth import ReloadingServerTls, load_server_tls
from common.auth._grpc_tls import reloading_server_credentials

ServiceRegistration = Callable[[grpc.aio.Server], object]
"""Registers one or more servicers on the server (e.g. ``lambda s: add_to_server(s, policy)``)."""

log = logging.getLogger(__name__)

INFERENCE_SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def server_credentials(tls_dir: Path) -> grpc.ServerCredentials:
    """mTLS credentials from ``tls_dir`` (ca.pem, server.pem, server.key): clients must present a
    certificate signed by the CA."""
    m = load_server_tls(tls_dir)  # checked: no CA key beside it, a 0600 EC key, serverAuth
    return grpc.ssl_server_credentials(
        [(m.key, m.cert_chain)], root_certificates=m.ca_bundle, require_client_auth=True
    )


def grpc_server(
    s: ServerSettings,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    max_receive_bytes: int | None = None,
) -> grpc.aio.Server:
    """An unstarted server with the message, keepalive and connection limits of ``s``: silent
    connections are closed after the handshake timeout, idle ones after ``max_connection_idle_s``,
    every one after ``max_connection_age_s`` (+ grace), and a client pinging more often than
    ``min_client_ping_interval_s`` is cut off after ``max_ping_strikes``."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.max_send_message_length", s.max_message_bytes),
        ("grpc.max_receive_message_length", max_receive_bytes or s.max_message_bytes),
        ("grpc.max_metadata_size", s.max_metadata_bytes),
        ("grpc.keepalive_time_ms", ms(s.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(s.keepalive_timeout_s)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.server_handshake_timeout_ms", ms(s.handshake_timeout_s)),
        ("grpc.max_connection_idle_ms", ms(s.max_connection_idle_s)),
        ("grpc.max_connection_age_ms", ms(s.max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(s.max_connection_age_grace_s)),
        # The server-side (received pings) minimum despite its name; too-frequent pings are strikes.
        ("grpc.http2.min_ping_interval_without_data_ms", ms(s.min_client_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", s.max_ping_strikes),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.so_reuseport", int(s.reuse_port)),
    ]
    return grpc.aio.server(options=options, interceptors=list(interceptors))


def enable_health_and_reflection(
    server: grpc.aio.Server, services: Sequence[str]
) -> health.aio.HealthServicer:
    """Serve grpc.health.v1 and reflection listing ``services``; returns the health servicer
    (every status starts unknown: the caller sets them once serving)."""
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _ = session_pb2  # the session service's descriptors must be in the pool for reflection
    enable_reflection((*services, health.SERVICE_NAME), server)
    return health_servicer


def bind(
    server: grpc.aio.Server,
    host: str,
    port: int,
    tls: TlsSettings,
    material: ReloadingServerTls | None = None,
) -> int:
    """Bind ``host:port`` (mTLS from ``tls.dir`` unless ``tls.insecure``; from ``material``,
    re-read on rotation, when given); returns the port."""
    address = f"{host}:{port}"
    if tls.insecure:
        log.warning("serving WITHOUT TLS on %s (--insecure): development only", address)
        return server.add_insecure_port(address)
    if material is not None:
        return server.add_secure_port(address, reloading_server_credentials(material))
    return server.add_secure_port(address, server_credentials(tls.dir))


__all__ = [
    "INFERENCE_SERVICE",
    "ServiceRegistration",
    "bind",
    "enable_health_and_reflection",
    "grpc_server",
    "server_credentials",
]
