"""``aiml021 certs``: create a development CA, a server certificate and device certificates."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``certs`` subcommand."""
    p = subparsers.add_parser("certs", help="create dev CA, server and device certificates")
    p.add_argument("-o", "--out", type=Path, default=Path("certs"), help="output directory")
    p.add_argument("--device", action="append", default=[], help="device id (repeatable)")
    p.add_argument("--host", action="append", default=[], help="server DNS name or IP (repeatable)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from common.auth import write_dev_pki

    paths = write_dev_pki(args.out, args.device or ["device-0"], args.host or None)
    for role, path in paths.items():
        print(f"{role}: {path}")
    return 0


__all__ = ["register"]
