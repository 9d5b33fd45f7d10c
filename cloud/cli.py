"""``aiml021 serve``: run the gateway (settings from flags over AIML021_GATEWAY_* env vars)."""

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
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from cloud._settings import GatewaySettings
    from cloud.grpc import Gateway

    overrides: dict[str, Any] = {
        "models_dir": args.models,
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "port_file": args.port_file,
        "insecure": args.insecure,
        "tls_dir": args.tls_dir,
    }
    settings = GatewaySettings(**{k: v for k, v in overrides.items() if v is not None})
    asyncio.run(Gateway(settings).serve_forever())
    return 0


__all__ = ["register"]
