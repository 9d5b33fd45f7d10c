"""``aiml021 serve``: run the gateway (settings from flags over AIML021_GATEWAY_* and
AIML021_STORES_* env vars)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` subcommand."""
    p = subparsers.add_parser("serve", help="run the cloud gateway (gRPC, mTLS by default)")
    p.add_argument("--models", type=Path, help="models directory (default: models/)")
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="gRPC port (0 = pick a free one)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (0 = pick a free one)")
    p.add_argument("--port-file", type=Path, help="write the bound ports here as JSON")
    sec = p.add_mutually_exclusive_group()
    sec.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help="plaintext, no client certs (dev only)",
    )
    sec.add_argument("--tls-dir", type=Path, help="directory with ca.pem, server.pem, server.key")
    p.add_argument(
        "--backend",
        choices=["onnxruntime", "triton"],
        help="inference engine (AIML021_GATEWAY_BACKEND)",
    )
    p.add_argument("--triton-url", help="Triton gRPC host:port (AIML021_GATEWAY_TRITON_URL)")
    p.add_argument(
        "--stores",
        choices=["memory", "redis"],
        help="idempotency store and result cache (AIML021_STORES_BACKEND)",
    )
    p.add_argument("--redis-url", help="Redis URL for --stores redis (AIML021_STORES_REDIS_URL)")
    p.add_argument(
        "--metadata-url",
        help="sqlite:///PATH, postgresql://... or none (AIML021_STORES_METADATA_URL)",
    )
    p.add_argument(
        "--no-control-services",
        dest="control_services",
        action="store_false",
        default=None,
        help="serve only the session and inference services (no registry/deploy/cache/"
        "telemetry/policy)",
    )
    p.set_defaults(func=_serve)


def settings_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """(GatewaySettings, StoreSettings) from flags over the environment."""
    from cloud._settings import GatewaySettings
    from cloud.stores import StoreSettings

    gateway: dict[str, Any] = {
        "models_dir": args.models,
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "port_file": args.port_file,
        "insecure": args.insecure,
        "tls_dir": args.tls_dir,
        "backend": args.backend,
        "triton_url": args.triton_url,
        "control_services": args.control_services,
    }
    stores: dict[str, Any] = {
        "backend": args.stores,
        "redis_url": args.redis_url,
        "metadata_url": args.metadata_url,
    }
    return (
        GatewaySettings(**{k: v for k, v in gateway.items() if v is not None}),
        StoreSettings(**{k: v for k, v in stores.items() if v is not None}),
    )


def _serve(args: argparse.Namespace) -> int:
    from cloud.grpc import Gateway
    from cloud.stores import build_stores

    settings, store_settings = settings_from_args(args)
    asyncio.run(Gateway(settings, stores=build_stores(store_settings)).serve_forever())
    return 0


__all__ = ["register", "settings_from_args"]
