"""``aiml021 audit``: verify the audit chain and query it.

``verify`` exits 0 when every row recomputes and links and the chain ends at the recorded head,
1 naming the first bad row otherwise. ``query`` prints the matching rows (oldest first) as a
table or JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
from pathlib import Path

DEFAULT_DB = "sqlite:///aiml021-metadata.sqlite3"


def _time(text: str) -> float:
    """Unix seconds from ISO 8601 (UTC unless it names a zone) or a number."""
    try:
        return float(text)
    except ValueError:
        pass
    when = dt.datetime.fromisoformat(text)
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand."""
    p = subparsers.add_parser("audit", help="verify or query the hash-chained audit trail")
    sub = p.add_subparsers(dest="audit_command", metavar="ACTION", required=True)
    v = sub.add_parser("verify", help="check the chain: exit 1 on an edited/deleted/reordered row")
    q = sub.add_parser("query", help="print audit rows matching filters")
    for s in (v, q):
        s.add_argument("--db", default=DEFAULT_DB, help=f"metadata database URL ({DEFAULT_DB})")
    v.add_argument("--key-file", type=Path, help="the gateway's authz.audit_key_file (HMAC)")
    v.set_defaults(func=_verify)
    q.add_argument("--principal", default="")
    q.add_argument("--role", default="")
    q.add_argument("--org", default="")
    q.add_argument("--action", default="", help="substring of the method or route")
    q.add_argument("--outcome", default="", help="OK, UNAUTHENTICATED, PERMISSION_DENIED, ...")
    q.add_argument("--since", type=_time, help="ISO 8601 time or unix seconds")
    q.add_argument("--until", type=_time, help="ISO 8601 time or unix seconds")
    q.add_argument("--limit", type=int, default=1000)
    q.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    q.set_defaults(func=_query)


def _verify(args: argparse.Namespace) -> int:
    from cloud.authz._settings import read_audit_key

    from ._audit import audit_backend, verify

    async def run() -> int:
        backend = audit_backend(args.db)
        try:
            verdict = await verify(backend, read_audit_key(args.key_file))
        finally:
            await backend.close()
        if verdict.ok:
            print(f"audit chain OK: {verdict.rows} rows, head {verdict.head}")
            return 0
        print(f"audit chain BROKEN at row {verdict.bad_seq}: {verdict.problem}")
        return 1

    return asyncio.run(run())


def _query(args: argparse.Namespace) -> int:
    from ._audit import AuditFilter, audit_backend

    flt = AuditFilter(
        principal=args.principal,
        role=args.role,
        org=args.org,
        action=args.action,
        outcome=args.outcome,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )

    async def run() -> int:
        backend = audit_backend(args.db)
        try:
            rows = await backend.rows(flt)
        finally:
            await backend.close()
        for r in rows:
            when = dt.datetime.fromtimestamp(r.at_us / 1e6, dt.UTC).isoformat(
                timespec="milliseconds"
            )
            if args.json:
                print(json.dumps({**r.as_dict(), "time": when}))
            else:
                print(
                    f"{r.seq:>6} {when} {r.principal} ({r.role or '-'}, {r.org or '-'}) "
                    f"{r.action} {r.resource or '-'} -> {r.outcome}"
                    + (f": {r.detail}" if r.detail else "")
                )
        return 0

    return asyncio.run(run())


__all__ = ["register"]
