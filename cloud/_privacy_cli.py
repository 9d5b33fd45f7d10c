"""``aiml021 privacy``: erase a device (``forget``), manage the at-rest key ring (``keys``), scan
text for personal data (``scan``) and read a device's privacy ledger (``budget``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from common.errors import InvalidArgument

if TYPE_CHECKING:
    from common.privacy import KeyRing


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``privacy`` subcommand and its own subcommands."""
    p = subparsers.add_parser("privacy", help="privacy controls: forget a device, keys, DLP scan")
    sub = p.add_subparsers(dest="privacy_command", metavar="ACTION", required=True)

    f = sub.add_parser(
        "forget",
        help="remove a device's records from every store, leaving a tombstone",
        description="Deletes the device's rows (raw id and pseudonym) from every metadata table "
        "with a device_id column, its idempotency entries and the result-cache entries its "
        "requests wrote or read (in its org's shared cache too) from Redis, and records a "
        "tombstone. Stores come from the gateway settings (--config, AIML021_GATEWAY_* env).",
    )
    f.add_argument("device", help="the device id (as in its certificate)")
    f.add_argument("--config", type=Path, help="gateway settings file (.toml or .json)")
    f.add_argument("--org", default="", help="the device's org (namespaces its Redis entries)")
    f.add_argument("--metadata-url", help="override stores.metadata_url")
    f.add_argument("--redis-url", help="override stores.redis_url")
    f.add_argument(
        "--flush-org-cache",
        action="store_true",
        help="also delete the rest of the org's result-cache entries (other devices' too; "
        "for entries written before the gateway recorded who used them)",
    )
    f.add_argument("--actor", default="cli", help="who asked (written to the tombstone)")
    f.set_defaults(func=_forget)

    k = sub.add_parser(
        "keys",
        help="create, rotate, re-seal with or retire at-rest encryption keys",
        description="reseal: seal every metadata row and Redis value again under the primary "
        "key (after rotate); retire with --config (or --metadata-url/--redis-url) refuses a key "
        "that still seals something. Stores come from the gateway settings.",
    )
    k.add_argument("action", choices=["new", "rotate", "retire", "show", "reseal"])
    k.add_argument("--file", type=Path, required=True, help="key ring file (JSON, mode 0600)")
    k.add_argument("--id", help="key id to create (new/rotate) or retire")
    k.add_argument("--config", type=Path, help="gateway settings file (reseal, retire)")
    k.add_argument("--metadata-url", help="override stores.metadata_url")
    k.add_argument("--redis-url", help="override stores.redis_url")
    k.add_argument(
        "--seal-clear",
        action="store_true",
        help="reseal: also seal rows and values written in the clear (before encryption)",
    )
    k.add_argument("--dry-run", action="store_true", help="reseal: only count, by key id")
    k.set_defaults(func=_keys)

    s = sub.add_parser("scan", help="find and redact personal data in text (stdin or a file)")
    s.add_argument("file", nargs="?", help="text or JSON file; stdin when absent")
    s.add_argument("--json", action="store_true", help="input is JSON: redact every string")
    s.set_defaults(func=_scan)

    b = sub.add_parser("budget", help="ε a device has spent (its privacy ledger)")
    b.add_argument("ledger", type=Path, help="privacy.accountant_path of the device")
    b.add_argument("--delta", type=float, default=1e-5, help="δ to report ε at")
    b.set_defaults(func=_budget)


def _stores(args: argparse.Namespace) -> tuple[str, str | None]:
    """(metadata URL, Redis URL or None) from the gateway settings and the overrides."""
    from cloud._settings import GatewaySettings

    settings = GatewaySettings.load(args.config)
    metadata_url = args.metadata_url or settings.stores.metadata_url
    redis_url = args.redis_url or (
        settings.stores.redis_url if settings.stores.backend == "redis" else None
    )
    return metadata_url, redis_url


def _forget(args: argparse.Namespace) -> int:
    from cloud._privacy_forget import forget_device
    from cloud._settings import GatewaySettings
    from cloud.authz._settings import read_audit_key

    settings = GatewaySettings.load(args.config)
    metadata_url, redis_url = _stores(args)
    report = asyncio.run(
        forget_device(
            args.device,
            metadata_url=metadata_url,
            redis_url=redis_url,
            org=args.org,
            pseudonymiser=settings.privacy.pseudonymiser(),
            retired_pseudonymisers=settings.privacy.retired_pseudonymisers(),
            flush_org_cache=args.flush_org_cache,
            actor=args.actor,
            audit_key=read_audit_key(settings.authz.audit_key_file),
        )
    )
    print(json.dumps(report.as_dict(), sort_keys=True))
    return 0


def _keys(args: argparse.Namespace) -> int:
    from common.privacy import KeyRing

    path: Path = args.file
    if args.action == "new":
        if path.exists():
            raise InvalidArgument(f"{path} exists; use 'rotate' to add a key to it")
        ring = KeyRing.generate(args.id)
    else:
        ring = KeyRing.load(path)
        if args.action == "rotate":
            ring = ring.rotated(args.id)
        elif args.action == "retire":
            if not args.id:
                raise InvalidArgument("retire needs --id KEY")
            if args.config or args.metadata_url or args.redis_url:
                _check_unused(ring, args)
            ring = ring.without(args.id)
        elif args.action == "reseal":
            return _reseal(ring, args)
    if args.action != "show":
        ring.save(path)
    print(json.dumps({"file": str(path), "primary": ring.primary, "keys": ring.key_ids}))
    return 0


def _reseal(ring: KeyRing, args: argparse.Namespace) -> int:
    from cloud._privacy_keys import reseal

    metadata_url, redis_url = _stores(args)
    report = asyncio.run(
        reseal(
            ring,
            metadata_url=metadata_url,
            redis_url=redis_url,
            seal_clear=args.seal_clear,
            dry_run=args.dry_run,
        )
    )
    print(json.dumps({"primary": ring.primary, **report.as_dict()}, sort_keys=True))
    return 1 if report.unreadable else 0


def _check_unused(ring: KeyRing, args: argparse.Namespace) -> None:
    """InvalidArgument when something in the stores is still sealed under ``args.id``."""
    from cloud._privacy_keys import reseal

    metadata_url, redis_url = _stores(args)
    census = asyncio.run(reseal(ring, metadata_url=metadata_url, redis_url=redis_url, dry_run=True))
    left = census.key_ids.get(args.id, 0)
    if left:
        raise InvalidArgument(
            f"key {args.id!r} still seals {left} stored value(s); run "
            "'aiml021 privacy keys reseal' first (or wait for them to expire)"
        )


def _scan(args: argparse.Namespace) -> int:
    from common.privacy import PiiScanner, Redactor

    text = Path(args.file).read_text() if args.file else sys.stdin.read()
    counts: dict[str, int] = {}

    def tally(_where: str, found: Mapping[str, int]) -> None:
        for kind, n in found.items():
            counts[kind] = counts.get(kind, 0) + n

    redactor = Redactor(PiiScanner(), tally)
    if args.json:
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise InvalidArgument(f"--json: input is not JSON ({exc})") from None
        print(json.dumps(redactor.value(value, "scan")))
    else:
        sys.stdout.write(redactor.text(text, "scan"))
    print(json.dumps({"findings": counts}), file=sys.stderr)
    return 0


def _budget(args: argparse.Namespace) -> int:
    from common.privacy import PrivacyAccountant

    acc = PrivacyAccountant(args.delta, state_path=args.ledger)
    releases = {repr(k): v for k, v in acc.releases.items()}
    print(json.dumps({"epsilon": acc.spent(), "delta": args.delta, "releases": releases}))
    return 0


__all__ = ["register"]
