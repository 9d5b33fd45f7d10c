"""``aiml021 artifacts``: signed bundles in S3-compatible storage.

    aiml021 artifacts keygen --out certs/bundle-signing          # .key (0600) and .pub
    aiml021 artifacts publish BUNDLE_DIR --bucket B --signing-key certs/bundle-signing.key
    aiml021 artifacts assign --bucket B --device-class cam-v2 --bundle NAME VERSION
    aiml021 artifacts list --bucket B
    aiml021 artifacts update --bucket B --device-class cam-v2 --verify-key K.pub --root DIR

``--endpoint`` points at MinIO or another S3-compatible server; credentials as boto3 finds them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``artifacts`` subcommand."""
    p = subparsers.add_parser("artifacts", help="signed model bundles in S3-compatible storage")
    sub = p.add_subparsers(dest="action", required=True)
    k = sub.add_parser("keygen", help="a new Ed25519 signing key pair")
    k.add_argument("--out", type=Path, required=True, help="path prefix: OUT.key and OUT.pub")
    for name, helptext in (
        ("publish", "verify, sign and upload a bundle directory"),
        ("assign", "assign a registered bundle version to a device class"),
        ("list", "registered bundles, versions"),
        ("update", "device side: install, probe and swap in the assigned bundle"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--bucket", required=True)
        s.add_argument("--endpoint", default="", help="S3 endpoint URL (MinIO, moto)")
        if name == "publish":
            s.add_argument("bundle", type=Path)
            s.add_argument("--signing-key", type=Path, required=True)
        if name == "assign":
            s.add_argument("--device-class", required=True)
            s.add_argument("--bundle", nargs=2, metavar=("NAME", "VERSION"), required=True)
        if name == "update":
            s.add_argument("--device-class", required=True)
            s.add_argument("--verify-key", type=Path, required=True)
            s.add_argument("--root", type=Path, required=True, help="the device's bundle dir")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from common.artifacts import (
        ArtifactStore,
        BundleRef,
        BundleUpdater,
        generate_signing_key,
        load_signing_key,
        load_verify_key,
    )

    if args.action == "keygen":
        generate_signing_key(args.out.with_suffix(".key"), args.out.with_suffix(".pub"))
        print(f"wrote {args.out.with_suffix('.key')} and {args.out.with_suffix('.pub')}")
        return 0
    store = ArtifactStore(args.bucket, args.endpoint)
    if args.action == "publish":
        ref = store.publish(args.bundle, load_signing_key(args.signing_key))
        print(f"published {ref.name} {ref.version}")
    elif args.action == "assign":
        store.assign(args.device_class, BundleRef(*args.bundle))
        print(f"{args.device_class} -> {args.bundle[0]} {args.bundle[1]}")
    elif args.action == "list":
        print(json.dumps({n: store.versions(n) for n in store.names()}, indent=2))
    else:
        updater = BundleUpdater(
            store, load_verify_key(args.verify_key.read_bytes()), args.device_class, args.root
        )
        result = updater.check()
        print(json.dumps({"swapped": result.swapped, "current": result.current,
                          "error": result.error}))  # fmt: skip
        return 1 if result.error else 0
    return 0


__all__ = ["register"]
