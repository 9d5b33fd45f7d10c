"""The ``aiml021`` command: one entry point, subcommands owned by the package of their concept.

Each subcommand lives in the module that owns it and exposes ``register(subparsers)``, which adds
its parser and sets ``func`` (returning an exit code). Modules are imported lazily so that
``aiml021 --help`` stays fast and a missing optional extra only breaks its own subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from common.errors import AimlError
from common.telemetry import configure_logging

log = logging.getLogger(__name__)

# subcommand -> module defining register(subparsers). The module adds exactly that subcommand.
SUBCOMMANDS: dict[str, str] = {
    "split": "common.bundle.cli",
    "profile": "common.bundle.cli",
    "calibrate": "common.bundle.cli",
    "frames": "common.frames.cli",
    "ocr": "common.pipeline.cli",
    "ocr-eval": "common.pipeline.cli",
    "codec-sweep": "common.codecs.cli",
    "certs": "common.auth.cli",
    "token": "common.auth._jwks_cli",
    "audit": "cloud.stores._audit_cli",
    "artifacts": "common.artifacts.cli",
    "ca": "cloud._ca_cli",
    "enroll": "common.auth.cli",
    "serve": "cloud.cli",
    "report": "cloud._report",
    "edge": "edge_agent.cli",
    "policy": "policy.cli",
    "privacy": "cloud._privacy_cli",
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiml021", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log lines as text or JSON (request id, pseudonymous device, route, decision, "
        "status, trace id); default: $AIML021_LOG_FORMAT or text",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="one log line per request (default: $AIML021_ACCESS_LOG)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only import the module of the requested subcommand (or all of them for --help).
    wanted = next((a for a in argv if not a.startswith("-")), None)
    modules = (
        [SUBCOMMANDS[wanted]]
        if wanted in SUBCOMMANDS
        else list(dict.fromkeys(SUBCOMMANDS.values()))
    )
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if wanted in SUBCOMMANDS:
                raise
            log.debug("subcommand module %s unavailable: %s", name, exc)
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Before any subcommand imports grpc: its TLS 1.2 suites are switched off (TLS 1.3 only).
    from common.auth import require_tls13

    require_tls13()
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    configure_logging(
        args.log_format,
        logging.DEBUG if args.verbose else logging.INFO,
        access=args.access_log,
    )
    # processes this one starts (serve --workers) log the same way
    if args.log_format:
        os.environ["AIML021_LOG_FORMAT"] = args.log_format
    if args.access_log:
        os.environ["AIML021_ACCESS_LOG"] = "1"
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except AimlError as exc:
        print(f"aiml021 {args.command}: {exc.code.value}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
