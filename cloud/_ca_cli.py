"""``aiml021 ca``: the issuing CA's commands (``common.auth.cli.register_ca``) with the audit
trail. Every CA action that changes something (init, issue-bootstrap, sign, server-cert, revoke,
rotate, retire) and every enrollment and renewal the CA service answers is appended to the
hash-chained audit log in the metadata database given by ``--audit-url`` (the gateways' own,
so ``aiml021 audit verify|query`` covers them), as principal ``ca-operator:<user>`` or the
device. The CA host never needs the gateway; it needs the database, as it does for revocation.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from cloud.authz import read_audit_key
from cloud.core import AuditEvent
from cloud.stores import audit_log
from common.auth.cli import Record, register_ca

_DEVICE_ACTIONS = ("ca.enroll", "ca.renew")


@asynccontextmanager
async def _audit(args: argparse.Namespace) -> AsyncIterator[Record]:
    if not args.audit_url:
        yield lambda action, resource, outcome, detail: None
        return
    trail = audit_log(args.audit_url, read_audit_key(args.audit_key_file))
    await trail.start()
    operator = f"ca-operator:{getpass.getuser()}"

    def record(action: str, resource: str, outcome: str, detail: str) -> None:
        device = action in _DEVICE_ACTIONS
        trail(
            AuditEvent(
                principal=(resource or "anonymous") if device else operator,
                role="Device" if device else "Admin",
                org="",
                action=action,
                resource=resource,
                outcome=outcome,
                detail=detail[:256],
            )
        )

    try:
        yield record
    finally:
        await trail.stop()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ca`` subcommand."""
    ca = register_ca(subparsers, _audit)
    ca.add_argument(
        "--audit-url",
        default="",
        help="metadata database whose audit trail records CA actions (sqlite:///PATH, "
        "postgresql://...); empty: logged only",
    )
    ca.add_argument("--audit-key-file", type=Path, help="the audit HMAC key (authz.audit_key_file)")


__all__ = ["register"]
