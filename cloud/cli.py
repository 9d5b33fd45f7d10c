"""``aiml021 serve``: run the gateway. Settings come from flags > AIML021_GATEWAY_* env vars >
``--config FILE`` (TOML or JSON) > defaults; see :class:`cloud._settings.GatewaySettings`."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from common.settings import given

if TYPE_CHECKING:
    from cloud._settings import GatewaySettings

FLAGS: dict[str, str] = {
    "models": "models_dir",
    "host": "server.host",
    "port": "server.port",
    "port_file": "server.port_file",
    "workers": "server.workers",
    "metrics_port": "metrics.port",
    "rest_port": "rest.port",
    "insecure": "tls.insecure",
    "tls_dir": "tls.dir",
    "backend": "backend",
    "triton_url": "triton.url",
    "stores": "stores.backend",
    "redis_url": "stores.redis_url",
    "metadata_url": "stores.metadata_url",
    "control_services": "control_services",
}
"""Flag (argparse dest) -> settings key it overrides."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser(
        "serve",
        help="run the cloud gateway (gRPC, mTLS by default)",
        description="Flags override AIML021_GATEWAY_* env vars, which override --config.",
    )
    p.add_argument(
        "--config", type=Path, help="settings file (.toml or .json), see docs/gateway.md"
    )
    p.add_argument("--models", type=Path, help="models directory [models_dir]")
    p.add_argument("--host", help="bind address [server.host]")
    p.add_argument("--port", type=int, help="gRPC port, 0 = pick a free one [server.port]")
    p.add_argument("--metrics-port", type=int, help="Prometheus port, 0 = free [metrics.port]")
    p.add_argument("--rest-port", type=int, help="REST port [rest.port]")
    p.add_argument("--port-file", type=Path, help="write bound ports as JSON [server.port_file]")
    p.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the ports (SO_REUSEPORT); >1 needs --stores redis "
        "[server.workers]",
    )
    sec = p.add_mutually_exclusive_group()
    sec.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plaintext, no client certs, dev only: binds loopback only unless "
        "server.allow_insecure_non_loopback [tls.insecure]",
    )
    sec.add_argument("--tls-dir", type=Path, help="ca.pem, server.pem, server.key [tls.dir]")
    p.add_argument("--backend", choices=["onnxruntime", "triton"], help="engine [backend]")
    p.add_argument("--triton-url", help="Triton gRPC host:port [triton.url]")
    p.add_argument(
        "--stores", choices=["memory", "redis"], help="idempotency and cache [stores.backend]"
    )
    p.add_argument("--redis-url", help="Redis URL for --stores redis [stores.redis_url]")
    p.add_argument(
        "--metadata-url",
        help="sqlite:///PATH, postgresql://... or none [stores.metadata_url]",
    )
    p.add_argument(
        "--no-control-services",
        dest="control_services",
        action="store_false",
        default=None,
        help="serve only the session and inference services [control_services=false]",
    )
    p.set_defaults(func=_serve)


def settings_from_args(args: argparse.Namespace) -> GatewaySettings:
    """The gateway settings tree from flags > env > ``--config`` > defaults."""
    from cloud._settings import GatewaySettings

    flags = given(args, FLAGS)
    return GatewaySettings.load(args.config, flags)


def _serve(args: argparse.Namespace) -> int:
    from cloud.app import Gateway

    settings = settings_from_args(args)
    if settings.server.workers > 1:
        from cloud._workers import serve_workers

        return serve_workers(settings)
    asyncio.run(Gateway.from_settings(settings).serve_forever())
    return 0


__all__ = ["FLAGS", "register", "settings_from_args"]
